import ArgumentParser
import BatonClient
import BatonProtocol
import Foundation

struct Workers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The connected workers: process, name, jobs held, last heartbeat.")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let workers = try await self.connection.withClient { client in try await client.workers() }
        if self.connection.json {
            for worker in workers {
                var writer = JSONWriter()
                writer.beginObject()
                writer.member("pid", optional: worker.pid)
                writer.member("worker", optional: worker.name)
                writer.key("jobs")
                writer.beginArray()
                for job in worker.jobs { writer.integer(job) }
                writer.endArray()
                writer.member("last_heartbeat_at", optional: worker.lastHeartbeatAt)
                writer.endObject()
                print(writer.text)
            }
            return
        }
        guard !workers.isEmpty else { return print("no workers connected") }
        print(Stats.render(Self.rows(workers, now: Int64(Date().timeIntervalSince1970 * 1_000))))
    }

    /// The workers as table rows, header first; shared with `baton top`.
    static func rows(_ workers: [WorkerInfo], now: Int64) -> [[String]] {
        [["WORKER", "PID", "JOBS", "LAST HEARTBEAT"]]
            + workers.map { worker in
                [
                    worker.name ?? "-", worker.pid.map { "\($0)" } ?? "-",
                    worker.jobs.isEmpty ? "-" : worker.jobs.map { "\($0)" }.joined(separator: ","),
                    worker.lastHeartbeatAt.map { Stats.age(max(now - $0, 0)) + " ago" } ?? "-",
                ]
            }
    }
}

struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The server's verdict on its health; exits 0 when ok, 1 when degraded or failing."
    )

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let health = try await self.connection.withClient { client in try await client.health() }
        if self.connection.json {
            var writer = JSONWriter()
            writer.beginObject()
            writer.member("health", health.verdict)
            writer.key("reasons")
            writer.beginArray()
            for reason in health.reasons { writer.string(reason) }
            writer.endArray()
            writer.endObject()
            print(writer.text)
        } else {
            print(([health.verdict] + health.reasons).joined(separator: "\n  "))
        }
        if health.verdict != "ok" { throw ExitCode(1) }
    }
}
