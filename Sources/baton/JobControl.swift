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
        commandName: "set-queue",
        abstract: "Change a queue's settings: how many of its jobs run at once, how long each attempt may run.",
        discussion: "Settings left out stay as they are."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queue.")
    var queue: String

    @Option(help: "The most jobs that may run at once.")
    var maxRunning: Int?

    @Flag(help: "Remove the queue's limit on running jobs.")
    var noLimit = false

    @Option(help: "Stop (and retry) an attempt that runs longer than this, for jobs that set no time limit of their own.")
    var timeoutMs: Int64?

    @Flag(help: "Remove the queue's time limit.")
    var noTimeout = false

    func validate() throws {
        guard !(self.maxRunning != nil && self.noLimit), !(self.timeoutMs != nil && self.noTimeout) else {
            throw ValidationError("Give --max-running N or --no-limit, and --timeout-ms N or --no-timeout, not both.")
        }
        guard self.maxRunning != nil || self.noLimit || self.timeoutMs != nil || self.noTimeout else {
            throw ValidationError("Give a setting to change: --max-running, --no-limit, --timeout-ms or --no-timeout.")
        }
    }

    func run() async throws {
        var change = QueueSettings.Change()
        if self.maxRunning != nil || self.noLimit { change.maxRunning = .some(self.maxRunning) }
        if self.timeoutMs != nil || self.noTimeout { change.timeoutMilliseconds = .some(self.timeoutMs) }
        _ = try await self.connection.withClient { client in try await client.setQueue(self.queue, change) }
    }
}

extension ConnectionOptions {
    /// Prints a job's state after a change: `12 cancelled`, or `{"job":12,"state":"cancelled"}`.
    func report(_ state: JobState, of job: Int64) {
        print(self.json ? #"{"job":\#(job),"state":"\#(state.rawValue)"}"# : "\(job) \(state.rawValue)")
    }
}
