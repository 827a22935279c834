/// A circuit breaker on a queue (`set_queue {breaker}`): after a run of failures it stops
/// claims from the queue for a while, so that jobs wait instead of failing against a
/// service that is down (an LLM API returning errors), then lets one trial job through.
///
/// - Closed: claims run as usual. After `failures` failed attempts (a `fail` or a lease
///   expiry, time limits and dead workers included) within `window` milliseconds with no
///   success between, it opens.
/// - Open: nothing of the queue is claimed until the cooldown has passed. Jobs wait; none
///   is failed or spends an attempt.
/// - Half-open: one claim is admitted, the trial. Its success closes the breaker; its
///   failure opens it again. A trial that ends otherwise (released, cancelled, paused)
///   gives its place to the next claim.
///
/// While the breaker is open or half-open, only the trial's outcome counts: jobs that were
/// running when it opened end as they may without moving it. An operator closes it by hand.
public struct CircuitBreaker: Hashable, Sendable {
    public struct Settings: Hashable, Sendable {
        public var failures: Int
        public var windowMilliseconds: Int64
        public var cooldownMilliseconds: Int64

        public init(failures: Int, windowMilliseconds: Int64, cooldownMilliseconds: Int64) {
            self.failures = failures
            self.windowMilliseconds = windowMilliseconds
            self.cooldownMilliseconds = cooldownMilliseconds
        }
    }

    public enum State: Hashable, Sendable {
        case closed
        case open(until: Int64)
        /// `trial`: the job claimed as the trial, while it runs.
        case halfOpen(trial: Int64?)

        /// Its name on the wire.
        public var name: String {
            switch self {
            case .closed: "closed"
            case .open: "open"
            case .halfOpen: "half_open"
            }
        }
    }

    /// A change of state, to log and count.
    public enum Transition: Hashable, Sendable {
        case opened(until: Int64)
        case halfOpened
        case closed
    }

    public var settings: Settings
    public private(set) var state: State = .closed
    /// The times of the failures since the last success, within the window, oldest first.
    public private(set) var failures: [Int64] = []

    public init(_ settings: Settings) {
        self.settings = settings
    }

    /// A breaker as a store shared by many hosts keeps it: when it opened until (`nil`
    /// while closed; passed, it is half-open), its trial job while that runs, and the times
    /// of the failures since the last success, as of `now`.
    public init(_ settings: Settings, openUntil: Int64?, trial: Int64?, failures: [Int64], now: Int64) {
        self.settings = settings
        self.failures = failures
        if let openUntil {
            self.state = now < openUntil ? .open(until: openUntil) : .halfOpen(trial: trial)
        }
    }

    /// When an open breaker lets its trial through; `nil` unless it is open.
    public var opensUntil: Int64? {
        if case .open(let until) = self.state { until } else { nil }
    }

    /// Whether a claim may start a job of the queue at `now`. An open breaker whose cooldown
    /// has passed turns half-open here (the transition is returned).
    public mutating func admits(now: Int64) -> (admits: Bool, transition: Transition?) {
        switch self.state {
        case .closed:
            return (true, nil)
        case .open(let until):
            guard now >= until else { return (false, nil) }
            self.state = .halfOpen(trial: nil)
            return (true, .halfOpened)
        case .halfOpen(let trial):
            return (trial == nil, nil)
        }
    }

    /// A claim started `job`, after ``admits(now:)`` said it may.
    public mutating func started(_ job: Int64) {
        if case .halfOpen(nil) = self.state { self.state = .halfOpen(trial: job) }
    }

    /// An attempt of `job` completed.
    public mutating func succeeded(_ job: Int64) -> Transition? {
        switch self.state {
        case .closed:
            self.failures.removeAll()
            return nil
        case .halfOpen(let trial) where trial == job:
            self.state = .closed
            self.failures.removeAll()
            return .closed
        case .open, .halfOpen:
            return nil
        }
    }

    /// An attempt of `job` failed (its worker said so, or its lease ran out) at `now`.
    public mutating func failed(_ job: Int64, now: Int64) -> Transition? {
        switch self.state {
        case .closed:
            self.failures.append(now)
            self.failures.removeAll { $0 <= now - self.settings.windowMilliseconds }
            guard self.failures.count >= self.settings.failures else { return nil }
            return self.open(now: now)
        case .halfOpen(let trial) where trial == job:
            return self.open(now: now)
        case .open, .halfOpen:
            return nil
        }
    }

    /// An attempt of `job` ended without an outcome (released, cancelled, paused): a trial
    /// gives its place back.
    public mutating func abandoned(_ job: Int64) {
        if case .halfOpen(let trial) = self.state, trial == job { self.state = .halfOpen(trial: nil) }
    }

    /// Closes the breaker by hand; the transition, if it was not closed.
    public mutating func reset() -> Transition? {
        self.failures.removeAll()
        guard self.state != .closed else { return nil }
        self.state = .closed
        return .closed
    }

    private mutating func open(now: Int64) -> Transition {
        let until = now + self.settings.cooldownMilliseconds
        self.state = .open(until: until)
        self.failures.removeAll()
        return .opened(until: until)
    }
}
