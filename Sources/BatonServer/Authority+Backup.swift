import BatonProtocol
import BatonStore
import Dispatch
import NIOCore

/// `backup`: a copy of the store, made a few pages at a time between batches, so claims and
/// heartbeats are served while it runs however large the store is.
extension Authority {
    /// A backup in progress and the request waiting for it.
    struct RunningBackup {
        var backup: StoreBackup
        var id: String?
        var reply: ReplySink
        var startedAt: ContinuousClock.Instant
    }

    /// Pages copied per turn of the authority's loop: 1 MiB at SQLite's default page size,
    /// about a millisecond of copying, after which waiting requests are served.
    static let backupPagesPerStep: Int32 = 256

    /// Where a finished copy is synced and named, off the authority's thread.
    static let backupFinishing = DispatchQueue(label: "batond.backup")

    /// Starts a backup the batch just committed asked for. One runs at a time.
    func startBackup(path: String, id: String?, reply: ReplySink) {
        guard self.runningBackup == nil else {
            let running = self.runningBackup!.backup.path
            reply.succeed(Outcome(line: Reply.failure(id: id, BatonError(.invalidArgument, "a backup to \(running) is running: wait for its reply"))))
            return
        }
        do {
            let backup = try StoreBackup(of: self.store, to: path)
            self.runningBackup = RunningBackup(backup: backup, id: id, reply: reply, startedAt: .now)
            self.logger.info("backup started", metadata: ["backup.path": "\(path)"])
            self.loop.execute { self.stepBackup() }
        } catch let error as StoreError {
            reply.succeed(Outcome(line: Reply.failure(id: id, Self.backupError(error))))
        } catch {
            reply.succeed(Outcome(line: Reply.failure(id: id, BatonError(.internal, "\(error)"))))
        }
    }

    /// Copies one step, then lets whatever waits on the loop run before the next.
    private func stepBackup() {
        guard let running = self.runningBackup else { return }
        do {
            guard try running.backup.step(pages: Self.backupPagesPerStep) else {
                self.loop.execute { self.stepBackup() }
                return
            }
            let copy = running.backup.end()
            self.runningBackup = nil
            // The fsync of a copy as large as the store is no work for this thread.
            let (id, reply, startedAt, logger) = (running.id, running.reply, running.startedAt, self.logger)
            Self.backupFinishing.async {
                do {
                    let summary = try copy.persist()
                    let elapsed = ContinuousClock.now - startedAt
                    let milliseconds = elapsed.components.seconds * 1_000 + elapsed.components.attoseconds / 1_000_000_000_000_000
                    logger.notice(
                        "backup written",
                        metadata: ["backup.path": "\(copy.path)", "backup.bytes": "\(summary.bytes)", "backup.ms": "\(milliseconds)"]
                    )
                    reply.succeed(
                        Outcome(
                            line: Reply.success(id: id) { reply in
                                reply.member("path", copy.path)
                                reply.member("bytes", summary.bytes)
                                reply.member("pages", summary.pages)
                                reply.member("ms", milliseconds)
                            }
                        )
                    )
                } catch {
                    logger.error("backup failed", metadata: ["backup.path": "\(copy.path)", "error": "\(error)"])
                    let refusal = (error as? StoreError).map(Self.backupError) ?? BatonError(.internal, "\(error)")
                    reply.succeed(Outcome(line: Reply.failure(id: id, refusal)))
                }
            }
        } catch {
            self.runningBackup = nil
            running.backup.abandon()
            self.logger.error("backup failed", metadata: ["backup.path": "\(running.backup.path)", "error": "\(error)"])
            let refusal = (error as? StoreError).map(Self.backupError) ?? BatonError(.internal, "\(error)")
            running.reply.succeed(Outcome(line: Reply.failure(id: running.id, refusal)))
        }
    }

    /// Stops a backup when the server stops; its request is told so.
    func abandonBackup() {
        guard let running = self.runningBackup else { return }
        self.runningBackup = nil
        running.backup.abandon()
        running.reply.succeed(
            Outcome(line: Reply.failure(id: running.id, BatonError(.shuttingDown, "batond is stopping: the backup was abandoned")))
        )
    }

    private static func backupError(_ error: StoreError) -> BatonError {
        BatonError(error.isStorageFull ? .storageFull : .invalidArgument, error.message)
    }
}
