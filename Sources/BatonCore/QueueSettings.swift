/// A queue's settings, as `set_queue` sets them; each is `nil` while unset.
public struct QueueSettings: Hashable, Sendable {
    /// The most jobs of the queue that may run at once.
    public var maxRunning: Int?
    /// The time limit of each attempt of the queue's jobs that set none of their own.
    public var timeoutMilliseconds: Int64?
    /// The queue's circuit breaker.
    public var breaker: CircuitBreaker.Settings?

    public init(maxRunning: Int? = nil, timeoutMilliseconds: Int64? = nil, breaker: CircuitBreaker.Settings? = nil) {
        self.maxRunning = maxRunning
        self.timeoutMilliseconds = timeoutMilliseconds
        self.breaker = breaker
    }

    /// A change to some of the settings: a field left `nil` stays as it is, and one set
    /// to `.some(nil)` is removed.
    public struct Change: Hashable, Sendable {
        public var maxRunning: Int??
        public var timeoutMilliseconds: Int64??
        public var breaker: CircuitBreaker.Settings??

        public init(maxRunning: Int?? = nil, timeoutMilliseconds: Int64?? = nil, breaker: CircuitBreaker.Settings?? = nil) {
            self.maxRunning = maxRunning
            self.timeoutMilliseconds = timeoutMilliseconds
            self.breaker = breaker
        }

        public var isEmpty: Bool { self.maxRunning == nil && self.timeoutMilliseconds == nil && self.breaker == nil }
    }
}
