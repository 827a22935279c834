import ArgumentParser
import BatonClient
import BatonCore
import BatonProtocol

struct Claim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lease the best ready job of some queues.",
        discussion: """
            Prints the job (with --json, as the protocol's object: id, token, payload, …). Exits 2 when no job came. \
            The lease outlives this command (a detached claim): the script that runs the job reports on it with \
            heartbeat, complete or fail, and it ends with its lease period if nobody does.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queues to take from.")
    var queues: [String]

    @Option(help: "Wait up to this many milliseconds for a job.")
    var waitMs: Int64 = 0

    @Option(help: "The lease period, in milliseconds.")
    var leaseMs: Int64?

    @Option(help: "A name for this worker, shown by `baton get`.")
    var worker: String?

    func run() async throws {
        let lease = try await self.connection.withClient { client in
            try await client.claim(
                queues: self.queues, wait: .milliseconds(self.waitMs),
                leaseDuration: self.leaseMs.map { Duration.milliseconds($0) }, worker: self.worker, detached: true
            )
        }
        guard let lease else {
            if !self.connection.json { printError("baton: no job") }
            throw ExitCode(2)
        }
        if self.connection.json {
            var writer = JSONWriter()
            writer.beginObject()
            writer.member("id", lease.jobID)
            writer.member("queue", lease.queue)
            writer.member("token", lease.token.rawValue)
            writer.member("attempt", lease.attempt)
            writer.member("lease_expires_at", lease.expiresAt)
            writer.key("payload")
            writer.value(lease.payload)
            writer.key("checkpoint")
            writer.value(lease.checkpoint ?? .null)
            writer.endObject()
            print(writer.text)
        } else {
            print("job \(lease.jobID) token \(lease.token) attempt \(lease.attempt) of \(lease.maxAttempts)")
            print("payload \(lease.payload.jsonText)")
            if let checkpoint = lease.checkpoint { print("checkpoint \(checkpoint.jsonText)") }
        }
    }
}

/// The job and token every fenced command takes.
struct LeaseArguments: ParsableArguments {
    @Argument(help: "The job's id.")
    var job: Int64

    @Argument(help: "The token the claim returned.")
    var token: Int64

    func lease(_ client: BatonClient) -> Lease {
        Lease(jobID: self.job, token: FencingToken(rawValue: self.token), client: client)
    }
}

struct Heartbeat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Renew a lease.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var lease: LeaseArguments

    @Option(help: "A new lease period, in milliseconds.")
    var leaseMs: Int64?

    func run() async throws {
        let expires = try await self.connection.withClient { client in
            try await self.lease.lease(client).heartbeat(duration: self.leaseMs.map { Duration.milliseconds($0) })
        }
        print(self.connection.json ? #"{"lease_expires_at":\#(expires)}"# : "\(expires)")
    }
}

struct Complete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Finish a job successfully.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var lease: LeaseArguments

    @Argument(help: "A result as JSON; - reads it from standard input.")
    var result: String?

    func run() async throws {
        let result = try self.result.map { try parseJSON($0 == "-" ? readStandardInput() : $0, what: "the result") }
        try await self.connection.withClient { client in
            let lease = self.lease.lease(client)
            if let result { try await lease.complete(result: result) } else { try await lease.complete() }
        }
    }
}

struct Fail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "End an attempt unsuccessfully; prints what happens next.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var lease: LeaseArguments

    @Argument(help: "Why the attempt failed.")
    var error: String

    @Flag(help: "Fail for good: do not retry.")
    var noRetry = false

    func run() async throws {
        let outcome = try await self.connection.withClient { client in
            try await self.lease.lease(client).fail(self.error, retry: !self.noRetry)
        }
        switch outcome {
        case .retrying(let runAt): print(self.connection.json ? #"{"state":"retrying","run_at":\#(runAt)}"# : "retrying")
        case .failed: print(self.connection.json ? #"{"state":"failed"}"# : "failed")
        }
    }
}

struct Release: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Give a job back without spending its attempt.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var lease: LeaseArguments

    @Option(help: "Not claimable again for this many milliseconds.")
    var delayMs: Int64 = 0

    func run() async throws {
        try await self.connection.withClient { client in
            try await self.lease.lease(client).release(after: .milliseconds(self.delayMs))
        }
    }
}
