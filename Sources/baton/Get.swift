import ArgumentParser
import BatonClient
import BatonProtocol

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a whole job.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    func run() async throws {
        let job = try await self.connection.withClient { client in try await client.job(self.job) }
        if self.connection.json {
            print(job.jsonText)
            return
        }
        var rows: [(String, String)] = [
            ("job", "\(job.id)"),
            ("queue", job.queue),
            ("state", job.state.rawValue),
            ("attempts", "\(job.attempts) of \(job.maxAttempts)"),
            ("priority", "\(job.priority)"),
            ("payload", job.payload.jsonText),
        ]
        if let worker = job.worker { rows.append(("worker", worker)) }
        if let pid = job.peerPID { rows.append(("worker pid", "\(pid)")) }
        if job.progress != nil { rows.append(("progress", job.progressText)) }
        if let checkpoint = job.checkpoint { rows.append(("checkpoint", checkpoint.jsonText)) }
        if let result = job.result { rows.append(("result", result.jsonText)) }
        if let error = job.lastError { rows.append(("last error", error)) }
        if let error = job.earlierError { rows.append(("earlier error", "\(error) (an earlier attempt's; see baton events \(job.id))")) }
        if let parent = job.parent { rows.append(("parent", "\(parent) (enqueued by its completion)")) }
        let width = rows.map(\.0.count).max() ?? 0
        for (name, value) in rows {
            print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
        }
    }
}

extension JobInfo {
    /// The job as JSON, for `--json`.
    var jsonText: String {
        var writer = JSONWriter()
        writer.beginObject()
        writer.member("id", self.id)
        writer.member("queue", self.queue)
        writer.member("state", self.state.rawValue)
        writer.key("payload")
        writer.value(self.payload)
        writer.member("priority", self.priority)
        writer.member("attempts", self.attempts)
        writer.member("max_attempts", self.maxAttempts)
        writer.key("checkpoint")
        writer.value(self.checkpoint ?? .null)
        writer.key("progress")
        writer.value(self.progress ?? .null)
        writer.key("result")
        writer.value(self.result ?? .null)
        writer.member("last_error", optional: self.lastError)
        writer.member("earlier_error", optional: self.earlierError)
        writer.member("parent", optional: self.parent)
        writer.member("worker", optional: self.worker)
        writer.member("created_at", self.createdAt)
        writer.member("started_at", optional: self.startedAt)
        writer.member("finished_at", optional: self.finishedAt)
        writer.endObject()
        return writer.text
    }
}

extension String {
    fileprivate func padding(toLength length: Int, withPad pad: String, startingAt: Int) -> String {
        self.count >= length ? self : self + String(repeating: pad, count: length - self.count)
    }
}
