import NIOCore

/// Runs tasks on one event loop: the loop the store's connections live on.
///
/// A task that prefers it runs its code between statements on the thread that reads the
/// statements' answers, so a transaction of many statements never hops between threads,
/// each hop a wake-up of another thread that costs more than the statement's own work.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
