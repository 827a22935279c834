import BatonCore
import Dispatch
import Logging

/// Logs every state change of a job once, at `info`, with the same metadata keys
/// (`job.id`, `job.queue`, `job.state`, `lease.token`, `peer.pid`) whatever the change.
///
/// The authority collects a batch's changes and hands them over only after the batch has
/// committed, so a logged change is a durable one; formatting and writing happen on this
/// log's own queue, so the single writer never waits on a log line.
final class ChangeLog: Sendable {
    struct Change: Sendable {
        var event: JobEvent
        var job: Int64
        var queue: String?
        /// The state the job left; `nil` for a job just enqueued.
        var from: JobState?
        /// The wait before a claim, or the run before an attempt ended, for the metrics.
        var milliseconds: Int64?
    }

    private let logger: Logger
    private let queue = DispatchQueue(label: "batond.changes")
    /// Whether the logger's level lets `info` through; when not, nothing is written.
    let isEnabled: Bool

    init(logger: Logger) {
        self.logger = logger
        self.isEnabled = logger.logLevel <= .info
    }

    func write(_ changes: [Change]) {
        guard self.isEnabled, !changes.isEmpty else { return }
        self.queue.async { [logger] in
            for change in changes {
                var metadata: Logger.Metadata = [
                    "job.id": "\(change.job)",
                    "job.state": "\(change.event.state.rawValue)",
                ]
                if let queue = change.queue { metadata["job.queue"] = "\(queue)" }
                if let token = change.event.token { metadata["lease.token"] = "\(token.rawValue)" }
                if let pid = change.event.peerPID { metadata["peer.pid"] = "\(pid)" }
                if let detail = change.event.detail {
                    metadata[change.event.kind == .claimed ? "worker" : change.event.kind == .cancelled ? "reason" : "error"] = "\(detail)"
                }
                logger.info("job \(change.event.kind.rawValue)", metadata: metadata)
            }
        }
    }
}
