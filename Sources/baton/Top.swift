import ArgumentParser
import BatonClient
import BatonCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct Top: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A live view of queues, workers and the longest-running jobs, refreshed in place; q or Ctrl-C quits.",
        discussion: "When standard output is not a terminal, prints one plain frame per refresh instead."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Seconds between refreshes.")
    var interval: Double = 1

    @Option(help: "Stop after this many refreshes (default: until q or Ctrl-C).")
    var iterations: Int?

    func validate() throws {
        guard !self.connection.json else {
            throw ValidationError("top is a live view for people; for JSON, use stats --json, workers --json and health --json")
        }
        guard self.interval >= 0.05 else { throw ValidationError("--interval must be at least 0.05 seconds") }
    }

    func run() async throws {
        let screen = isatty(1) != 0 ? Screen() : nil
        defer { screen?.restore() }
        let quit = Atomic<Bool>(false)
        screen?.watchKeys { quit.store(true, ordering: .relaxed) }
        try await self.connection.withClient { client in
            var previous: Sample?
            var frame = 0
            while !quit.load(ordering: .relaxed) {
                let sample = try await Sample(client: client)
                let text = Self.render(sample, since: previous, interval: self.interval, live: screen != nil)
                if let screen { screen.draw(text) } else { print(text + "\n") }
                previous = sample
                frame += 1
                if let iterations = self.iterations, frame >= iterations { break }
                let deadline = ContinuousClock.now + .milliseconds(Int(self.interval * 1_000))
                while ContinuousClock.now < deadline, !quit.load(ordering: .relaxed) {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
        }
    }

    /// One refresh's worth of readings.
    struct Sample {
        var at = ContinuousClock.now
        var wall = Int64(Date().timeIntervalSince1970 * 1_000)
        var queues: [String: QueueStats]
        var metrics: MetricsSnapshot
        var workers: [WorkerInfo]
        var health: HealthInfo
        var running: [JobInfo]
        var limits: [LimitInfo]

        init(client: BatonClient) async throws {
            self.queues = try await client.stats()
            self.metrics = try await client.metrics()
            self.workers = try await client.workers()
            self.health = try await client.health()
            self.running = try await client.list(state: .running, limit: 1_000, oldestFirst: true).jobs
            self.limits = try await client.limits()
        }
    }

    static func render(_ sample: Sample, since previous: Sample?, interval: Double, live: Bool) -> String {
        let time = Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false))
        var lines = [
            "baton top  \(time)  health \(sample.health.verdict)  \(sample.workers.count) workers"
                + (live ? "  (q quits)" : ""),
        ]
        lines += sample.health.reasons.map { "  ! \($0)" }
        lines.append("")
        let elapsed = previous.map { Double((sample.at - $0.at).components.attoseconds) / 1e18 + Double((sample.at - $0.at).components.seconds) }
        func rate(_ name: String, _ queue: String) -> String {
            guard let elapsed, elapsed > 0, let now = sample.metrics.value(name, queue: queue) else { return "-" }
            let before = previous?.metrics.value(name, queue: queue) ?? 0
            return String(format: "%.1f", max(now - before, 0) / elapsed)
        }
        var queues = [["QUEUE", "QUEUED", "RUNNING", "RETRYING", "FAILED", "DONE/S", "FAILED/S", "P95 WAIT", "ADMISSION"]]
        for (name, stats) in sample.queues.sorted(by: { $0.key < $1.key }) {
            let p95 = sample.metrics.histograms.first { $0.name == "baton_job_wait_seconds" && $0.labels["queue"] == name }?.p95
            queues.append([
                name, "\(stats.counts[.queued] ?? 0)", "\(stats.counts[.running] ?? 0)", "\(stats.counts[.retrying] ?? 0)",
                "\(stats.counts[.failed] ?? 0)", rate("baton_jobs_completed_total", name), rate("baton_jobs_failed_total", name),
                p95.map { Stats.age(Int64($0 * 1_000)) } ?? "-", Stats.admission(stats),
            ])
        }
        lines.append(sample.queues.isEmpty ? "no jobs" : Stats.render(queues))
        if !sample.limits.isEmpty {
            lines.append("")
            lines.append(Stats.render(Limits.rows(sample.limits.prefix(10))))
        }
        lines.append("")
        lines.append(sample.workers.isEmpty ? "no workers connected" : Stats.render(Workers.rows(sample.workers, now: sample.wall)))
        lines.append("")
        let longest = sample.running.sorted { ($0.startedAt ?? 0) < ($1.startedAt ?? 0) }.prefix(5)
        if longest.isEmpty {
            lines.append("nothing running")
        } else {
            var rows = [["JOB", "QUEUE", "RUNNING FOR", "WORKER"]]
            for job in longest {
                rows.append(["\(job.id)", job.queue, Stats.age(max(sample.wall - (job.startedAt ?? sample.wall), 0)), job.worker ?? "-"])
            }
            lines.append(Stats.render(rows))
        }
        return lines.joined(separator: "\n")
    }
}

/// The terminal while `baton top` owns it: the alternate screen, no cursor, keys read one
/// at a time. Everything is put back by ``restore()``, however `top` ends.
private final class Screen: Sendable {
    private let saved: termios?

    init() {
        var original = termios()
        if isatty(0) != 0, tcgetattr(0, &original) == 0 {
            var raw = original
            // Keys arrive one by one, unechoed; Ctrl-C arrives as a byte, not as SIGINT.
            raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG)
            tcsetattr(0, TCSANOW, &raw)
            self.saved = original
        } else {
            self.saved = nil
        }
        Self.write("\u{1B}[?1049h\u{1B}[?25l")
    }

    /// Calls `quit` when q or Ctrl-C is pressed.
    func watchKeys(_ quit: @escaping @Sendable () -> Void) {
        guard self.saved != nil else { return }
        Thread.detachNewThread {
            var byte: UInt8 = 0
            while read(0, &byte, 1) == 1 {
                if byte == UInt8(ascii: "q") || byte == UInt8(ascii: "Q") || byte == 3 { return quit() }
            }
        }
    }

    func draw(_ frame: String) {
        // Home and clear, then the frame (output processing stays on, so newlines still return).
        Self.write("\u{1B}[H\u{1B}[2J" + frame + "\n")
    }

    func restore() {
        Self.write("\u{1B}[?25h\u{1B}[?1049l")
        if var saved = self.saved { tcsetattr(0, TCSANOW, &saved) }
    }

    private static func write(_ text: String) {
        var text = text
        text.withUTF8 { bytes in _ = Glibc.write(1, bytes.baseAddress, bytes.count) }
    }
}
