package com.example.codepipeline.worker;

import codepipeline.jobworker.v1.JobWorker.Job;
import java.time.Duration;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * MAX_IN_FLIGHT slots, each a thread that works one job at a time. Polling reserves the free slots
 * before it asks for jobs, starts one job per slot, and gives back the slots it did not use; a job
 * stream reserves a slot for each job it delivers, and its credit keeps them within the slots
 * (but for a while after a reopen: then jobs wait for a thread).
 */
final class JobPool {
  private final int slots;
  private final ExecutorService threads;
  private final JobHandler handler;
  /** Reserved slots: jobs in hand, and slots reserved for jobs a poll may return. */
  private int reserved; // guarded by this

  private volatile Runnable onSlotFreed = () -> {};

  JobPool(int slots, JobHandler handler) {
    this.slots = slots;
    this.handler = handler;
    AtomicInteger count = new AtomicInteger();
    this.threads = Executors.newFixedThreadPool(slots, work -> new Thread(work, "job-" + count.incrementAndGet()));
  }

  /** Runs `listener` whenever a slot is freed. */
  void onSlotFreed(Runnable listener) {
    this.onSlotFreed = listener;
  }

  /** Waits for a free slot and reserves every free one; 0 when the worker stops first. */
  synchronized int reserveFree(Stopping stopping) throws InterruptedException {
    while (reserved >= slots) {
      if (stopping.isSet()) {
        return 0;
      }
      wait(100);
    }
    int free = slots - reserved;
    reserved = slots;
    return free;
  }

  /** Waits for one free slot and reserves it, stopping or not. */
  synchronized void reserveOne() throws InterruptedException {
    while (reserved >= slots) {
      wait();
    }
    reserved++;
  }

  /** Reserves a slot for a job a stream delivered, free or not: the stream's credit decides. */
  synchronized void reserveDelivered() {
    reserved++;
  }

  /** Works a polled job (acknowledging it first) on a reserved slot, freed when the job is done. */
  void start(Job job) {
    threads.execute(() -> work(job, false));
  }

  /** Works a job acknowledged on its stream on a reserved slot, freed when the job is done. */
  void startAcknowledged(Job job) {
    threads.execute(() -> work(job, true));
  }

  private void work(Job job, boolean acknowledged) {
    try {
      handler.handle(job, acknowledged);
    } finally {
      release(1);
    }
  }

  /** Gives back reserved slots: jobs done with, or slots that got no job. */
  void release(int unused) {
    if (unused > 0) {
      synchronized (this) {
        reserved -= unused;
        notifyAll();
      }
      onSlotFreed.run();
    }
  }

  /** Slots neither reserved nor working; below 0 while a reopened stream's jobs wait for threads. */
  synchronized int free() {
    return slots - reserved;
  }

  synchronized int inHand() {
    return reserved;
  }

  /** Lets the jobs in hand finish, then ends the threads. */
  void drain(Duration patience) throws InterruptedException {
    threads.shutdown();
    threads.awaitTermination(patience.toMillis(), TimeUnit.MILLISECONDS);
  }
}
