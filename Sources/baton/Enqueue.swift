import ArgumentParser
import BatonClient
import BatonCore

struct Enqueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Add a job; prints its id.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queue.")
    var queue: String

    @Argument(help: "The payload as JSON (null for none); - reads it from standard input.")
    var payload: String

    @Option(help: "Higher runs first.")
    var priority: Int32?

    @Option(help: "Do not run before this many milliseconds from now.")
    var delayMs: Int64?

    @Option(help: "Attempts in all.")
    var maxAttempts: Int?

    @Option(help: "The lease period for this job's claims, in milliseconds.")
    var leaseMs: Int64?

    @Option(help: "Return the unfinished job with this key instead of adding another.")
    var uniqueKey: String?

    @Option(help: "Never run while another job with this key runs.")
    var concurrencyKey: String?

    @Option(name: .customLong("after"), help: "A job that must complete first (repeatable).")
    var after: [Int64] = []

    @Option(help: "Stop (and retry) an attempt that runs longer than this many milliseconds, even while it heartbeats.")
    var timeoutMs: Int64?

    @Option(name: .customLong("limit"), help: "A named limit the job counts against (repeatable, at most 4; see set-limit).")
    var limits: [String] = []

    @Option(help: "The job's fair-share group (a tenant or user): claims rotate across a queue's groups.")
    var group: String?

    @Option(help: "The W3C trace context the job carries to its workers (default: $TRACEPARENT, with $TRACESTATE).")
    var traceparent: String?

    @Flag(help: "Send no trace context, even with $TRACEPARENT set.")
    var noTrace = false

    func validate() throws {
        if let traceparent = self.traceparent, TraceContext(traceparent: traceparent) == nil {
            throw ValidationError(TraceContext.problem(traceparent: traceparent, tracestate: nil) ?? "--traceparent is not valid")
        }
    }

    func run() async throws {
        let payload = try parseJSON(self.payload == "-" ? readStandardInput() : self.payload, what: "the payload")
        let trace: EnqueueOptions.Trace =
            if self.noTrace { .none } else if let given = self.traceparent.flatMap({ TraceContext(traceparent: $0) }) { .context(given) } else { .current }
        let options = EnqueueOptions(
            priority: self.priority,
            delay: self.delayMs.map { Duration.milliseconds($0) },
            maxAttempts: self.maxAttempts,
            leaseDuration: self.leaseMs.map { Duration.milliseconds($0) },
            uniqueKey: self.uniqueKey,
            concurrencyKey: self.concurrencyKey,
            after: self.after,
            timeout: self.timeoutMs.map { Duration.milliseconds($0) },
            limits: self.limits,
            group: self.group,
            trace: trace
        )
        let result = try await self.connection.withClient { client in
            try await client.enqueue(queue: self.queue, payload: payload, options: options)
        }
        if self.connection.json {
            print(#"{"job":\#(result.jobID),"duplicate":\#(result.duplicate)}"#)
        } else {
            print(result.duplicate ? "\(result.jobID) (already queued)" : "\(result.jobID)")
        }
    }
}
