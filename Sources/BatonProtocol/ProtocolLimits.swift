/// The bounds a server puts on what a client may send; `hello` reports them.
public struct ProtocolLimits: Hashable, Sendable {
    /// The longest request line, newline excluded.
    public var maximumLineBytes: Int
    /// How deeply arrays and objects may nest, the request object itself being depth 1.
    public var maximumDepth: Int
    /// The longest queue name, unique key or worker name, in UTF-8 bytes.
    public var maximumNameBytes: Int
    /// The longest a `claim` may wait for a job.
    public var maximumWaitMilliseconds: Int64
    /// The longest lease a claim or heartbeat may ask for.
    public var maximumLeaseMilliseconds: Int64
    /// How many queues one `claim` may name.
    public var maximumClaimQueues: Int
    /// How many jobs one `enqueue_batch`, or one `complete`'s follow-ups, may hold.
    public var maximumBatchJobs: Int
    /// How many JSON values a request may hold outside its verbatim fields (payloads, results,
    /// checkpoint states), which the parser checks without building. This bounds the parser's
    /// working memory whatever the line limit: each value costs tens of bytes once built.
    public var maximumValues: Int

    public init(
        maximumLineBytes: Int = 1 << 20,
        maximumDepth: Int = 32,
        maximumNameBytes: Int = 255,
        maximumWaitMilliseconds: Int64 = 300_000,
        maximumLeaseMilliseconds: Int64 = 86_400_000,
        maximumClaimQueues: Int = 64,
        maximumBatchJobs: Int = 1_000,
        maximumValues: Int = 250_000
    ) {
        self.maximumLineBytes = maximumLineBytes
        self.maximumDepth = maximumDepth
        self.maximumNameBytes = maximumNameBytes
        self.maximumWaitMilliseconds = maximumWaitMilliseconds
        self.maximumLeaseMilliseconds = maximumLeaseMilliseconds
        self.maximumClaimQueues = maximumClaimQueues
        self.maximumBatchJobs = maximumBatchJobs
        self.maximumValues = maximumValues
    }
}

/// The protocol version this code speaks; `hello` reports it.
public let batonProtocolVersion = 1
