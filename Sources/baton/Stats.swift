import ArgumentParser
import BatonClient
import BatonCore
import BatonProtocol

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Job counts per queue and state, as a table.")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let queues = try await self.connection.withClient { client in try await client.stats() }
        let states: [JobState] = [.queued, .running, .retrying, .paused, .completed, .failed, .cancelled]
        if self.connection.json {
            var writer = JSONWriter()
            writer.beginObject()
            for (name, queue) in queues.sorted(by: { $0.key < $1.key }) {
                writer.key(name)
                writer.beginObject()
                for state in states { writer.member(state.rawValue, queue.counts[state] ?? 0) }
                writer.member("oldest_ready_age_ms", optional: queue.oldestReadyAgeMilliseconds)
                writer.member("paused", queue.paused)
                writer.member("max_running", optional: queue.maxRunning.map(Int64.init))
                writer.member("breaker", optional: queue.breaker)
                writer.endObject()
            }
            writer.endObject()
            print(writer.text)
            return
        }
        var table = [["QUEUE"] + states.map { $0.rawValue.uppercased() } + ["OLDEST READY", "ADMISSION"]]
        for (name, queue) in queues.sorted(by: { $0.key < $1.key }) {
            let oldest = queue.oldestReadyAgeMilliseconds.map(Self.age) ?? "-"
            table.append([name] + states.map { "\(queue.counts[$0] ?? 0)" } + [oldest, Self.admission(queue)])
        }
        if queues.isEmpty {
            print("no jobs")
            return
        }
        print(Self.render(table))
    }

    /// What holds a queue's claims back: `paused`, `max 4 running`, `breaker open`, or `-`.
    static func admission(_ queue: QueueStats) -> String {
        let limits = (queue.paused ? ["paused"] : []) + (queue.maxRunning.map { ["max \($0) running"] } ?? [])
            + (queue.breaker.map { ["breaker \($0 == "half_open" ? "half-open" : $0)"] } ?? [])
        return limits.isEmpty ? "-" : limits.joined(separator: ", ")
    }

    /// Columns padded to their widest cell; numbers right-aligned.
    static func render(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return column == 0 ? cell + padding : padding + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    static func age(_ milliseconds: Int64) -> String {
        switch milliseconds {
        case ..<1_000: "\(milliseconds)ms"
        case ..<60_000: "\(milliseconds / 1_000)s"
        case ..<3_600_000: "\(milliseconds / 60_000)m"
        default: "\(milliseconds / 3_600_000)h"
        }
    }
}
