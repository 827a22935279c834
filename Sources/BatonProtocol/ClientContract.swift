/// What every client does, as `protocol/PROTOCOL.md` ("What every client does") states it:
/// the Swift client's copy of those lists, which its tests check against the document.
public enum ClientContract {
    /// Where a client looks for batond's socket after an explicit path.
    public static let socketEnvironmentVariable = "BATON_SOCKET"
    /// batond's own default, relative to the working directory.
    public static let defaultSocketPath = "baton-data/baton.sock"

    /// The socket a client uses: `explicit` if given, else `$BATON_SOCKET`, else the default.
    public static func socketPath(explicit: String? = nil, environment: [String: String]) -> String {
        if let explicit { return explicit }
        if let variable = environment[Self.socketEnvironmentVariable], !variable.isEmpty { return variable }
        return Self.defaultSocketPath
    }

    /// Ops that applied twice are the same as applied once, so a client sends them again
    /// after a connection drops before their reply.
    public static let resendableOps: Set<String> = [
        "hello", "get", "list", "stats", "events", "health", "metrics", "workers",
        "heartbeat", "checkpoint", "complete", "pause_queue", "resume_queue", "set_queue",
        "set_priority", "schedules", "unschedule", "set_limit", "limits",
    ]

    /// Codes that mean "not now": an op safe to resend is sent again after a pause, as
    /// after a lost reply, until the reconnect time runs out.
    public static let retryLaterCodes: Set<BatonError.Code> = [.unavailable]

    /// Codes that, on a fenced op, mean the worker no longer holds the job: it stops and
    /// reports nothing more for that attempt.
    public static let leaseEndingCodes: Set<BatonError.Code> = [
        .leaseLost, .cancelled, .paused, .timedOut, .invalidTransition, .notFound, .forbidden,
    ]
}
