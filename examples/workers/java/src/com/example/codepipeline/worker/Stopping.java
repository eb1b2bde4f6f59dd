package com.example.codepipeline.worker;

import io.grpc.Context;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Set once, by SIGTERM or SIGINT: the worker takes no more jobs. Waits on it end early, and calls
 * made in its context (polls) are cancelled.
 */
final class Stopping {
  private final CountDownLatch stopped = new CountDownLatch(1);
  private final Context.CancellableContext context = Context.ROOT.withCancellation();

  void stop() {
    stopped.countDown();
    context.cancel(null);
  }

  boolean isSet() {
    return stopped.getCount() == 0;
  }

  /** Waits up to `wait`; true when the worker is stopping. */
  boolean await(Duration wait) {
    try {
      return stopped.await(wait.toNanos(), TimeUnit.NANOSECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return true;
    }
  }

  /** The gRPC context that is cancelled when the worker stops. */
  Context.CancellableContext context() {
    return context;
  }
}
