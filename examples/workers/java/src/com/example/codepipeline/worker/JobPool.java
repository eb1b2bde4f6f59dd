package com.example.codepipeline.worker;

import codepipeline.jobworker.v1.JobWorker.Job;
import java.time.Duration;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * MAX_IN_FLIGHT slots, each a thread that works one job at a time. A mode reserves the free slots
 * before it asks for jobs, starts one job per slot, and gives back the slots it did not use.
 */
final class JobPool {
  private final int slots;
  private final Semaphore free;
  private final ExecutorService threads;
  private final JobHandler handler;

  JobPool(int slots, JobHandler handler) {
    this.slots = slots;
    this.free = new Semaphore(slots);
    this.handler = handler;
    AtomicInteger count = new AtomicInteger();
    this.threads = Executors.newFixedThreadPool(slots, work -> new Thread(work, "job-" + count.incrementAndGet()));
  }

  /** Waits for a free slot and reserves every free one; 0 when the worker stops first. */
  int reserveFree(Stopping stopping) throws InterruptedException {
    while (!free.tryAcquire(100, TimeUnit.MILLISECONDS)) {
      if (stopping.isSet()) {
        return 0;
      }
    }
    return 1 + free.drainPermits();
  }

  /** Waits for one free slot and reserves it, stopping or not. */
  void reserveOne() throws InterruptedException {
    free.acquire();
  }

  /** Works the job on a reserved slot, which is freed when the job is done. */
  void start(Job job) {
    threads.execute(
        () -> {
          try {
            handler.handle(job);
          } finally {
            free.release();
          }
        });
  }

  /** Gives back reserved slots that got no job. */
  void release(int unused) {
    if (unused > 0) {
      free.release(unused);
    }
  }

  int inHand() {
    return slots - free.availablePermits();
  }

  /** Lets the jobs in hand finish, then ends the threads. */
  void drain(Duration patience) throws InterruptedException {
    threads.shutdown();
    threads.awaitTermination(patience.toMillis(), TimeUnit.MILLISECONDS);
  }
}
