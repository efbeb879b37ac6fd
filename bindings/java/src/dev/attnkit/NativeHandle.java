package dev.attnkit;

import java.lang.ref.Cleaner;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.LongConsumer;

/**
 * Owns one native attnkit object for a public wrapper: calls run under a read lock (so objects the
 * C ABI allows to be shared run concurrently), close and the Cleaner take the write lock, so an
 * object is never freed while a call uses it. A wrapper that is never closed is freed once it is
 * unreachable. Use after close throws IllegalStateException.
 */
final class NativeHandle implements Runnable {
  interface Call<T> {
    T apply(long pointer);
  }

  interface VoidCall {
    void apply(long pointer);
  }

  private static final Cleaner CLEANER = Cleaner.create();

  private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
  private final String name;
  private final LongConsumer free;
  private long pointer;
  private Cleaner.Cleanable cleanable;

  private NativeHandle(String name, long pointer, LongConsumer free) {
    this.name = name;
    this.pointer = pointer;
    this.free = free;
  }

  /** Takes ownership of {@code pointer} for {@code owner}; must not fail after the object exists. */
  static NativeHandle own(Object owner, String name, long pointer, LongConsumer free) {
    if (pointer == 0) {
      throw new AttnKitException(AttnKitException.Code.INTERNAL, name + ": no object was created");
    }
    NativeHandle handle = new NativeHandle(name, pointer, free);
    handle.cleanable = CLEANER.register(owner, handle);
    return handle;
  }

  <T> T call(Call<T> body) {
    lock.readLock().lock();
    try {
      return body.apply(checkedPointer());
    } finally {
      lock.readLock().unlock();
    }
  }

  void run(VoidCall body) {
    lock.readLock().lock();
    try {
      body.apply(checkedPointer());
    } finally {
      lock.readLock().unlock();
    }
  }

  boolean isClosed() {
    lock.readLock().lock();
    try {
      return pointer == 0;
    } finally {
      lock.readLock().unlock();
    }
  }

  /** Frees the object now; later calls are no-ops. */
  void close() {
    cleanable.clean();
  }

  /** The Cleaner's action (runs at most once): waits for running calls, then frees. */
  @Override
  public void run() {
    lock.writeLock().lock();
    try {
      if (pointer != 0) {
        free.accept(pointer);
        pointer = 0;
      }
    } finally {
      lock.writeLock().unlock();
    }
  }

  private long checkedPointer() {
    if (pointer == 0) throw new IllegalStateException(name + " is closed");
    return pointer;
  }
}
