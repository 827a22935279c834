/// The settings a job gets when its `enqueue` does not name them.
public struct JobDefaults: Hashable, Sendable {
    /// Attempts in all: the first one plus three retries, as in the design notes.
    public var maxAttempts: Int
    public var backoff: BackoffPolicy
    /// How long a claim holds a job without a heartbeat.
    public var leaseMilliseconds: Int64

    public init(maxAttempts: Int = 4, backoff: BackoffPolicy = .standard, leaseMilliseconds: Int64 = 30_000) {
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.leaseMilliseconds = leaseMilliseconds
    }
}
