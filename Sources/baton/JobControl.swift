import ArgumentParser
import BatonClient
import BatonCore

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel an unfinished job; a running one's worker is told at its next heartbeat."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    @Option(help: "Why, stored as the job's last error.")
    var reason: String?

    func run() async throws {
        let state = try await self.connection.withClient { client in try await client.cancel(self.job, reason: self.reason) }
        self.connection.report(state, of: self.job)
    }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold a job back; a running one's worker is told at its next heartbeat and gets its attempt back."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    func run() async throws {
        let state = try await self.connection.withClient { client in try await client.pause(self.job) }
        self.connection.report(state, of: self.job)
    }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Let a paused job run again, from its checkpoint.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    func run() async throws {
        let state = try await self.connection.withClient { client in try await client.resume(self.job) }
        self.connection.report(state, of: self.job)
    }
}

struct Retry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a failed or cancelled job again, attempts reset.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    func run() async throws {
        let state = try await self.connection.withClient { client in try await client.retry(self.job) }
        self.connection.report(state, of: self.job)
    }
}

struct SetPriority: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-priority", abstract: "Give an unfinished job a new priority; a running one keeps it for its next attempt."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    @Option(parsing: .unconditional, help: "The new priority; higher is claimed first.")
    var priority: Int32

    func run() async throws {
        let state = try await self.connection.withClient { client in try await client.setPriority(self.job, to: Int64(self.priority)) }
        self.connection.report(state, of: self.job)
    }
}

struct PauseQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause-queue", abstract: "Stop claims from a queue; running jobs finish normally."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queue.")
    var queue: String

    func run() async throws {
        try await self.connection.withClient { client in try await client.pauseQueue(self.queue) }
    }
}

struct ResumeQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume-queue", abstract: "Let claims take from a queue again.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queue.")
    var queue: String

    func run() async throws {
        try await self.connection.withClient { client in try await client.resumeQueue(self.queue) }
    }
}

struct SetQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-queue", abstract: "Limit how many jobs of a queue run at once."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queue.")
    var queue: String

    @Option(help: "The most jobs that may run at once.")
    var maxRunning: Int?

    @Flag(help: "Remove the queue's limit.")
    var noLimit = false

    func validate() throws {
        guard (self.maxRunning == nil) == self.noLimit else {
            throw ValidationError("Give either --max-running N or --no-limit.")
        }
    }

    func run() async throws {
        try await self.connection.withClient { client in try await client.setQueueLimit(self.queue, maxRunning: self.maxRunning) }
    }
}

extension ConnectionOptions {
    /// Prints a job's state after a change: `12 cancelled`, or `{"job":12,"state":"cancelled"}`.
    func report(_ state: JobState, of job: Int64) {
        print(self.json ? #"{"job":\#(job),"state":"\#(state.rawValue)"}"# : "\(job) \(state.rawValue)")
    }
}
