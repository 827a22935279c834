import BatonProtocol

#if canImport(Glibc)
import Glibc
#endif

/// When the server stops calling itself healthy.
public struct HealthThresholds: Sendable {
    /// A ready job waiting longer than this makes the server `degraded`: workers are
    /// missing, stuck or too few.
    public var maximumReadyAgeMilliseconds: Int64
    /// A job running longer than this makes the server `degraded`.
    public var maximumRunningMilliseconds: Int64
    /// Less free space than this beside the store makes it `degraded`.
    public var minimumFreeBytes: Int64

    public init(
        maximumReadyAgeMilliseconds: Int64 = 300_000, maximumRunningMilliseconds: Int64 = 3_600_000,
        minimumFreeBytes: Int64 = 100 << 20
    ) {
        self.maximumReadyAgeMilliseconds = maximumReadyAgeMilliseconds
        self.maximumRunningMilliseconds = maximumRunningMilliseconds
        self.minimumFreeBytes = minimumFreeBytes
    }
}

/// The server's own verdict on its health, and the figures behind it.
///
/// One verdict serves every watcher: the `health` op, the systemd watchdog (pinged unless
/// `failing`) and the `STATUS=` line. `failing` is kept for what a restart can mend (a
/// failed commit, a lease-expiry sweep that has stopped); `degraded` for what wants an
/// operator (work waiting too long, jobs running too long, a filling disk).
public struct HealthReport: Sendable {
    public enum Verdict: String, Sendable, Comparable {
        case ok
        case degraded
        case failing

        /// As the `baton_health` gauge shows it: 0 ok, 1 degraded, 2 failing.
        public var level: Int64 {
            switch self {
            case .ok: 0
            case .degraded: 1
            case .failing: 2
            }
        }

        public static func < (lhs: Verdict, rhs: Verdict) -> Bool {
            [Verdict.ok, .degraded, .failing].firstIndex(of: lhs)! < [Verdict.ok, .degraded, .failing].firstIndex(of: rhs)!
        }
    }

    public var verdict: Verdict = .ok
    public var reasons: [String] = []
    /// How long ago the store last committed; `nil` before the first commit.
    public var lastCommitAgeMilliseconds: Int64?
    /// How far the earliest lease deadline is overdue (0 when the sweep is on time).
    public var expirySweepLagMilliseconds: Int64 = 0
    public var oldestReadyAgeMilliseconds: Int64?
    /// How long each queue's oldest ready job has waited, for the queues that have one.
    public var readyAgeByQueue: [String: Int64] = [:]
    /// Jobs running longer than the threshold, longest first.
    public var longRunningJobs: [Int64] = []
    public var freeBytes: Int64?
    /// Jobs queued or retrying, due or not: the work not yet running.
    public var waiting = 0
    public var running = 0
    public var parkedClaims = 0

    mutating func flag(_ verdict: Verdict, _ reason: String) {
        self.verdict = max(self.verdict, verdict)
        self.reasons.append(reason)
    }

    /// Judges the queues' oldest ready jobs (each queue's job and when it became due), as
    /// of `now`: each queue's age, and `degraded` when the oldest has waited past `threshold`.
    mutating func judgeReady(_ oldest: [String: (job: Int64, runAt: Int64)], now: Int64, threshold: Int64) {
        var first: (queue: String, job: Int64, runAt: Int64)?
        for (queue, ready) in oldest {
            self.readyAgeByQueue[queue] = max(now - ready.runAt, 0)
            if ready.runAt < first?.runAt ?? .max { first = (queue, ready.job, ready.runAt) }
        }
        guard let first else { return }
        let age = max(now - first.runAt, 0)
        self.oldestReadyAgeMilliseconds = age
        if age > threshold {
            self.flag(.degraded, "job \(first.job) in \(first.queue) has been ready for \(HealthReport.span(age)) with no worker taking it")
        }
    }

    /// A one-line summary for `STATUS=` and logs.
    public var summary: String {
        let figures = "\(self.waiting) waiting, \(self.running) running, \(self.parkedClaims) claims waiting"
        return self.reasons.isEmpty ? "\(self.verdict.rawValue): \(figures)" : "\(self.verdict.rawValue): \(self.reasons.joined(separator: "; ")); \(figures)"
    }

    /// A span of time for a reason: `850 ms`, `42 s`.
    static func span(_ milliseconds: Int64) -> String {
        milliseconds < 10_000 ? "\(milliseconds) ms" : "\(milliseconds / 1_000) s"
    }

    /// Free space on the file system holding `path`, for whoever runs this process.
    static func freeBytes(at path: String) -> Int64? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }
}

extension JSONWriter {
    /// The `health` op's result.
    mutating func health(_ report: HealthReport) {
        self.member("health", report.verdict.rawValue)
        self.key("reasons")
        self.beginArray()
        for reason in report.reasons { self.string(reason) }
        self.endArray()
        self.member("last_commit_age_ms", optional: report.lastCommitAgeMilliseconds)
        self.member("expiry_sweep_lag_ms", report.expirySweepLagMilliseconds)
        self.member("oldest_ready_age_ms", optional: report.oldestReadyAgeMilliseconds)
        self.key("long_running_jobs")
        self.beginArray()
        for job in report.longRunningJobs { self.integer(job) }
        self.endArray()
        self.member("free_bytes", optional: report.freeBytes)
        self.member("waiting", report.waiting)
        self.member("running", report.running)
        self.member("parked_claims", report.parkedClaims)
    }
}
