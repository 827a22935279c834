import ArgumentParser
import BatonClient
import BatonCore

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List jobs, newest first, as a table.",
        discussion: "Prints the cursor for the next page last; pass it to --after."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Only this queue.")
    var queue: String?

    @Option(help: "Only jobs in this state.")
    var state: String?

    @Option(help: "Jobs per page.")
    var limit: Int = 20

    @Option(help: "The cursor a previous page printed.")
    var after: Int64?

    @Flag(help: "Oldest first.")
    var oldest = false

    func run() async throws {
        let state = try self.state.map { name in
            guard let state = JobState(rawValue: name) else { throw ValidationError("unknown state \"\(name)\"; the states are \(JobState.allCases.map(\.rawValue).joined(separator: ", "))") }
            return state
        }
        let page = try await self.connection.withClient { client in
            try await client.list(queue: self.queue, state: state, limit: self.limit, after: self.after, oldestFirst: self.oldest)
        }
        if self.connection.json {
            print("{\"jobs\":[" + page.jobs.map(\.jsonText).joined(separator: ",") + "],\"next\":" + (page.next.map(String.init) ?? "null") + "}")
            return
        }
        guard !page.jobs.isEmpty else {
            print("no jobs")
            return
        }
        var rows = [["JOB", "QUEUE", "STATE", "ATTEMPTS", "PARENT", "PROGRESS", "LAST ERROR"]]
        for job in page.jobs {
            rows.append([
                "\(job.id)", job.queue, job.state.rawValue, "\(job.attempts)/\(job.maxAttempts)", job.parent.map(String.init) ?? "-",
                job.progressText, job.lastError ?? "-",
            ])
        }
        print(Stats.render(rows))
        if let next = page.next { print("next page: --after \(next)") }
    }
}

extension JobInfo {
    /// The last progress for people: `33% extract`; `-` when none was reported.
    var progressText: String {
        guard let progress = self.progress else { return "-" }
        guard case .object(let fields) = progress else { return progress.jsonText }
        var parts: [String] = []
        switch fields["percent"] {
        case .integer(let percent)?: parts.append("\(percent)%")
        case .double(let percent)?: parts.append("\(Int(percent.rounded()))%")
        default: break
        }
        if case .string(let message)? = fields["message"] { parts.append(message) }
        return parts.isEmpty ? progress.jsonText : parts.joined(separator: " ")
    }
}
