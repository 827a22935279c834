import DequeModule
import HeapModule

/// A named limit's settings (`set_limit`): how many of the jobs naming it may run at once,
/// how many may start in a span of time, and its circuit breaker. Any may be unset.
public struct LimitSettings: Hashable, Sendable {
    /// At most `count` starts in any `perMilliseconds` span: a sliding window, exact.
    public struct Rate: Hashable, Sendable {
        public var count: Int
        public var perMilliseconds: Int64

        public init(count: Int, perMilliseconds: Int64) {
            self.count = count
            self.perMilliseconds = perMilliseconds
        }
    }

    public var maxRunning: Int?
    public var rate: Rate?
    /// Stops starts of the jobs naming it after a run of their failures (``CircuitBreaker``).
    public var breaker: CircuitBreaker.Settings?

    public init(maxRunning: Int? = nil, rate: Rate? = nil, breaker: CircuitBreaker.Settings? = nil) {
        self.maxRunning = maxRunning
        self.rate = rate
        self.breaker = breaker
    }

    public var isEmpty: Bool { self.maxRunning == nil && self.rate == nil && self.breaker == nil }

    /// A change to some of the settings: a field left `nil` stays, one set to `.some(nil)` is removed.
    public struct Change: Hashable, Sendable {
        public var maxRunning: Int??
        public var rate: Rate??
        public var breaker: CircuitBreaker.Settings??

        public init(maxRunning: Int?? = nil, rate: Rate?? = nil, breaker: CircuitBreaker.Settings?? = nil) {
            self.maxRunning = maxRunning
            self.rate = rate
            self.breaker = breaker
        }

        public var isEmpty: Bool { self.maxRunning == nil && self.rate == nil && self.breaker == nil }
    }

    /// These settings with `change` applied.
    public func applying(_ change: Change) -> LimitSettings {
        var settings = self
        if let maxRunning = change.maxRunning { settings.maxRunning = maxRunning }
        if let rate = change.rate { settings.rate = rate }
        if let breaker = change.breaker { settings.breaker = breaker }
        return settings
    }

    /// Whether `name` is a template (`tenant:*`), which sets the limit of every name that
    /// starts with its prefix (`tenant:42`) and has no limit of its own.
    public static func isTemplate(_ name: String) -> Bool {
        name.utf8.count > 2 && name.hasSuffix(":*")
    }
}

/// The named limits shared across queues (`limits: ["openai", "tenant:42"]` on a job) and
/// the admission rule they make: a claim starts a job only if every limit it names admits
/// it, and a job held back waits, never failed.
///
/// - `max_running`: fewer than that many jobs naming the limit are running.
/// - `rate`: fewer than `count` of them started in the last `per_ms` (a sliding window of
///   start times, so no span of `per_ms` ever holds more than `count` starts).
/// - `breaker`: a ``CircuitBreaker`` over the outcomes of the jobs naming the limit.
///
/// A name ending in `:*` is a template: `tenant:*` limits `tenant:42` and `tenant:7` each
/// on its own (each its own count, window and breaker), by the longest template whose
/// prefix (up to and including a `:`) the name starts with, unless the name has settings
/// of its own.
///
/// Kept by the single writer beside its running jobs, on the lease clock (which stands
/// still while the authority is stalled). Every name a running job uses is counted, set or
/// not, so a limit set later sees what already runs. State exists only for names in use:
/// a name is forgotten once none of its jobs runs, its window is empty and its breaker is
/// closed with no failures counted. Holding a claim back records the queue, so that the
/// queue is offered to parked claims again when the limit may admit: at once when a job
/// ends, on ``nextWakeup`` when a window opens or a cooldown ends.
public struct NamedLimits: Sendable {
    public static let maximumPerJob = 4

    /// A job's limits as both stores keep them in a column: a JSON array of strings (which the
    /// triggers counting waiting jobs read with `json_each`), `NULL` for none. Names hold no
    /// control characters, so only `"` and `\` need escaping.
    public static func text(of limits: [String]) -> String? {
        guard !limits.isEmpty else { return nil }
        let quoted = limits.map { name in
            "\"" + Self.escaped(name) + "\""
        }
        return "[" + quoted.joined(separator: ",") + "]"
    }

    /// The column read back (as ``text(of:)`` writes it).
    public static func names(inText text: String?) -> [String] {
        guard let text else { return [] }
        var names: [String] = []
        var name: [UInt8] = []
        var inString = false
        var escaped = false
        for byte in text.utf8 {
            if !inString {
                if byte == UInt8(ascii: "\"") { inString = true }
            } else if escaped {
                name.append(byte)
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                names.append(String(decoding: name, as: UTF8.self))
                name.removeAll(keepingCapacity: true)
                inString = false
            } else {
                name.append(byte)
            }
        }
        return names
    }

    private static func escaped(_ name: String) -> String {
        var out = ""
        out.reserveCapacity(name.utf8.count)
        for character in name.unicodeScalars {
            if character == "\\" || character == "\"" { out.unicodeScalars.append("\\") }
            out.unicodeScalars.append(character)
        }
        return out
    }

    /// Settings by name, templates (`tenant:*`) included.
    public private(set) var settings: [String: LimitSettings] = [:]
    /// The templates' prefixes (`tenant:`), for the lookups of names with a `:`.
    private var templatePrefixes: Set<String> = []
    private var usage: [String: Usage] = [:]
    private var wakeups = Heap<Wakeup>()
    /// The breakers' changes since ``takeTransitions()``, to log and count.
    private var transitions: [Transition] = []

    /// A limit's breaker changed; `byHand` when `set_limit` closed it.
    public struct Transition: Hashable, Sendable {
        public var name: String
        public var transition: CircuitBreaker.Transition
        public var byHand: Bool

        public init(name: String, transition: CircuitBreaker.Transition, byHand: Bool) {
            self.name = name
            self.transition = transition
            self.byHand = byHand
        }
    }

    private struct Usage: Sendable {
        var running = 0
        /// Start times within the window, oldest first; kept only while a rate applies.
        var starts: Deque<Int64> = []
        /// Queues whose claims passed over a job this limit held back.
        var held: Set<String> = []
        /// When this name's earliest pending wakeup is due.
        var wakeAt: Int64?
        /// Its breaker, while its rule has one.
        var breaker: CircuitBreaker?

        var isIdle: Bool {
            self.running == 0 && self.starts.isEmpty && self.held.isEmpty
                && (self.breaker.map { $0.state == .closed && $0.failures.isEmpty } ?? true)
        }
    }

    private struct Wakeup: Comparable, Sendable {
        var at: Int64
        var name: String

        static func < (lhs: Wakeup, rhs: Wakeup) -> Bool { (lhs.at, lhs.name) < (rhs.at, rhs.name) }
    }

    public init() {}

    // MARK: Settings

    /// The settings that apply to `name`: its own, else its longest template's. Bounded by
    /// the name's length, however many templates there are.
    public func rule(for name: String) -> (rule: String, settings: LimitSettings)? {
        if let own = self.settings[name] { return (name, own) }
        guard !self.templatePrefixes.isEmpty else { return nil }
        var best: String?
        var index = name.startIndex
        while let colon = name[index...].firstIndex(of: ":") {
            let prefix = String(name[...colon])
            if self.templatePrefixes.contains(prefix) { best = prefix }
            index = name.index(after: colon)
        }
        guard let best else { return nil }
        let template = best + "*"
        return self.settings[template].map { (template, $0) }
    }

    /// Sets (or, empty, removes) a limit's settings. The breakers it governs are closed:
    /// setting a limit is how an operator closes one by hand.
    ///
    /// - Parameter freed: receives every queue a limit held back: a change may let them start.
    public mutating func set(_ name: String, to settings: LimitSettings, freeing freed: inout Set<String>) {
        if settings.isEmpty {
            self.settings.removeValue(forKey: name)
        } else {
            self.settings[name] = settings
        }
        if LimitSettings.isTemplate(name) {
            let prefix = String(name.dropLast())
            if settings.isEmpty { self.templatePrefixes.remove(prefix) } else { self.templatePrefixes.insert(prefix) }
        }
        for used in Array(self.usage.keys) {
            let rule = self.rule(for: used)
            var closed = false
            self.usage.modifyValue(forKey: used) { usage in
                freed.formUnion(usage.held)
                usage.held.removeAll()
                if rule?.settings.rate == nil { usage.starts.removeAll() }
                guard let breaker = rule?.settings.breaker else {
                    usage.breaker = nil
                    return
                }
                if usage.breaker == nil { usage.breaker = CircuitBreaker(breaker) }
                usage.breaker!.settings = breaker
                if rule?.rule == name, usage.breaker!.reset() != nil { closed = true }
            }
            if closed { self.transitions.append(Transition(name: used, transition: .closed, byHand: true)) }
            self.forgetIfIdle(used)
        }
    }

    /// Takes a name's use as a store many hosts share keeps it: `running` jobs, and the
    /// `starts` within its window (oldest first).
    public mutating func restore(_ name: String, running: Int, starts: [Int64]) {
        var usage = self.usage[name] ?? Usage()
        usage.running = running
        usage.starts = Deque(starts.sorted())
        self.usage[name] = usage
    }

    /// Takes a name's breaker as a store many hosts share keeps it (made with its rule's
    /// settings, ``CircuitBreaker/init(_:openUntil:trial:failures:now:)``).
    public mutating func restore(_ breaker: CircuitBreaker, of name: String) {
        self.usage[name, default: Usage()].breaker = breaker
    }

    /// A name's breaker as it stands, where its rule has one and the name is in use.
    public func breaker(of name: String) -> CircuitBreaker? { self.usage[name]?.breaker }

    // MARK: Admission

    /// Whether every limit in `names` lets a job start at lease time `now`. A limit that
    /// holds it back records `queue`, to offer it again when the limit may admit.
    public mutating func admits(_ names: [String], queue: String, now: Int64) -> Bool {
        for name in names {
            guard let (_, settings) = self.rule(for: name) else { continue }
            if let max = settings.maxRunning, self.usage[name]?.running ?? 0 >= max {
                self.hold(queue, at: name, wakeAt: nil)
                return false
            }
            if let rate = settings.rate {
                var opensAt: Int64?
                self.usage.modifyValue(forKey: name) { usage in
                    Self.prune(&usage.starts, rate: rate, now: now)
                    if usage.starts.count >= rate.count { opensAt = usage.starts.first! + rate.perMilliseconds }
                }
                if let opensAt {
                    self.hold(queue, at: name, wakeAt: opensAt)
                    return false
                }
            }
            if let breaker = settings.breaker {
                if self.usage[name] == nil { self.usage[name] = Usage() }
                var verdict: (admits: Bool, transition: CircuitBreaker.Transition?) = (true, nil)
                var cooldownEnds: Int64?
                self.usage.modifyValue(forKey: name) { usage in
                    if usage.breaker == nil { usage.breaker = CircuitBreaker(breaker) }
                    verdict = usage.breaker!.admits(now: now)
                    cooldownEnds = usage.breaker!.opensUntil
                }
                if let transition = verdict.transition { self.transitions.append(Transition(name: name, transition: transition, byHand: false)) }
                if !verdict.admits {
                    // Open: look again when the cooldown ends; half-open: when the trial ends.
                    self.hold(queue, at: name, wakeAt: cooldownEnds)
                    return false
                }
            }
        }
        return true
    }

    /// Job `job`, naming `names`, started at lease time `now` (after
    /// ``admits(_:queue:now:)``, or when a restart finds it running).
    public mutating func started(_ names: [String], job: Int64, now: Int64) {
        for name in names {
            let settings = self.rule(for: name)?.settings
            let rate = settings?.rate
            self.usage[name, default: Usage()].running += 1
            self.usage.modifyValue(forKey: name) { usage in
                if usage.breaker == nil, let breaker = settings?.breaker { usage.breaker = CircuitBreaker(breaker) }
                usage.breaker?.started(job)
                guard let rate else { return }
                usage.starts.append(now)
                while usage.starts.count > rate.count { usage.starts.removeFirst() }
            }
        }
    }

    /// Job `job`'s attempt, naming `names`, completed (`succeeded`) or failed at lease
    /// time `now`: its limits' breakers hear of it. Called before ``ended(_:job:freeing:)``.
    public mutating func heard(_ names: [String], job: Int64, succeeded: Bool, now: Int64) {
        for name in names where self.usage[name]?.breaker != nil {
            var transition: CircuitBreaker.Transition?
            self.usage.modifyValue(forKey: name) { usage in
                transition = succeeded ? usage.breaker!.succeeded(job) : usage.breaker!.failed(job, now: now)
            }
            guard let transition else { continue }
            self.transitions.append(Transition(name: name, transition: transition, byHand: false))
            if case .opened(let until) = transition { self.schedule(name, at: until) }
        }
    }

    /// Job `job`, naming `names`, stopped running, however it ended: a trial that ended
    /// without an outcome gives its place back.
    ///
    /// - Parameter freed: receives the queues its limits held back.
    public mutating func ended(_ names: [String], job: Int64, freeing freed: inout Set<String>) {
        for name in names {
            let rate = self.rule(for: name)?.settings.rate
            var sweepAt: Int64?
            self.usage.modifyValue(forKey: name) { usage in
                usage.running = max(usage.running - 1, 0)
                usage.breaker?.abandoned(job)
                freed.formUnion(usage.held)
                usage.held.removeAll()
                if usage.running == 0, let last = usage.starts.last, let rate {
                    sweepAt = last + rate.perMilliseconds
                }
            }
            if let sweepAt { self.schedule(name, at: sweepAt) }
            self.forgetIfIdle(name)
        }
    }

    /// When the earliest window may open or cooldown end, or an idle name's window empties.
    public var nextWakeup: Int64? { self.wakeups.min?.at }

    /// Offers again the queues held back by limits whose wakeups have come by `now` (a
    /// claim that is still held back is held again), and forgets names no longer in use.
    public mutating func wake(now: Int64, freeing freed: inout Set<String>) {
        while let wakeup = self.wakeups.min, wakeup.at <= now {
            self.wakeups.removeMin()
            guard self.usage[wakeup.name]?.wakeAt == wakeup.at else { continue }  // superseded
            let rate = self.rule(for: wakeup.name)?.settings.rate
            var next: Int64?
            self.usage.modifyValue(forKey: wakeup.name) { usage in
                usage.wakeAt = nil
                if let rate { Self.prune(&usage.starts, rate: rate, now: now) } else { usage.starts.removeAll() }
                freed.formUnion(usage.held)
                usage.held.removeAll()
                if usage.running == 0, let last = usage.starts.last, let rate { next = last + rate.perMilliseconds }
                if let until = usage.breaker?.opensUntil, until > now { next = min(next ?? .max, until) }
            }
            if let next { self.schedule(wakeup.name, at: next) }
            self.forgetIfIdle(wakeup.name)
        }
    }

    /// The breakers' changes since the last call, oldest first.
    public mutating func takeTransitions() -> [Transition] {
        defer { self.transitions.removeAll() }
        return self.transitions
    }

    // MARK: What they show

    /// One limit's use, for `limits`, `stats` and the metrics.
    public struct Use: Hashable, Sendable {
        public var name: String
        /// The setting it runs under (its own name, or a template's); `nil` when unset.
        public var rule: String?
        public var settings: LimitSettings?
        public var running: Int
        /// Starts within the rate window, as of the last look.
        public var recentStarts: Int
        /// Whether a claim was held back by it since it last freed a slot.
        public var holding: Bool
        /// Its breaker's state, where it has one.
        public var breaker: CircuitBreaker.State?
        /// How many jobs naming it wait to run (queued or retrying), as the store counts them.
        public var waiting = 0
    }

    /// Each limit with settings, and each name in use, by name.
    public var uses: [Use] { self.uses(including: []) }

    /// Each limit with settings, each name in use, and each of `names`, by name, with the
    /// store's counts of the jobs waiting on each (``Use/waiting``).
    public func uses(including names: some Sequence<String>, waiting: [String: Int] = [:]) -> [Use] {
        var names = Set(names)
        names.formUnion(self.usage.keys)
        names.formUnion(self.settings.keys)
        return names.sorted().map { name in
            let usage = self.usage[name]
            let rule = self.rule(for: name)
            return Use(
                name: name, rule: rule?.rule, settings: rule?.settings, running: usage?.running ?? 0,
                recentStarts: usage?.starts.count ?? 0, holding: !(usage?.held.isEmpty ?? true),
                breaker: usage?.breaker?.state ?? (rule?.settings.breaker != nil && !LimitSettings.isTemplate(name) ? .closed : nil),
                waiting: waiting[name] ?? 0
            )
        }
    }

    /// The limits whose breakers are not closed, by name.
    public var openBreakers: [(name: String, state: CircuitBreaker.State)] {
        self.usage.compactMap { name, usage in
            usage.breaker.flatMap { $0.state == .closed ? nil : (name, $0.state) }
        }.sorted { $0.name < $1.name }
    }

    /// How many jobs naming `name` run.
    public func running(_ name: String) -> Int { self.usage[name]?.running ?? 0 }

    /// The limits that hold claims back now, with the queues passed over and when each may
    /// admit again by the clock alone: what a host sharing a store keeps (``LimitHolds``).
    public var holds: [LimitHolds.Hold] {
        self.usage.compactMap { name, usage in
            usage.held.isEmpty ? nil : LimitHolds.Hold(name: name, queues: usage.held, wakeAt: usage.wakeAt)
        }
    }

    // MARK: Bookkeeping

    private static func prune(_ starts: inout Deque<Int64>, rate: LimitSettings.Rate, now: Int64) {
        while let first = starts.first, first <= now - rate.perMilliseconds { starts.removeFirst() }
    }

    private mutating func hold(_ queue: String, at name: String, wakeAt: Int64?) {
        if self.usage[name] == nil { self.usage[name] = Usage() }
        self.usage.modifyValue(forKey: name) { $0.held.insert(queue) }
        if let wakeAt { self.schedule(name, at: wakeAt) }
    }

    private mutating func schedule(_ name: String, at time: Int64) {
        var scheduled = false
        self.usage.modifyValue(forKey: name) { usage in
            guard usage.wakeAt.map({ time < $0 }) ?? true else { return }
            usage.wakeAt = time
            scheduled = true
        }
        if scheduled { self.wakeups.insert(Wakeup(at: time, name: name)) }
    }

    private mutating func forgetIfIdle(_ name: String) {
        if let usage = self.usage[name], usage.isIdle, usage.wakeAt == nil { self.usage.removeValue(forKey: name) }
    }
}
