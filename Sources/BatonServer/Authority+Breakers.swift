import BatonCore
import BatonProtocol
import Logging

/// The queues' circuit breakers (``CircuitBreaker``), kept by the single writer beside
/// its running jobs: consulted by every claim of a queue that has one, moved by the
/// outcomes of its jobs.
extension Authority {
    /// Whether a claim may start a job of `queue` now, by its breaker if it has one.
    func breakerAdmits(_ queue: String, _ context: inout BatchContext) -> Bool {
        guard self.breakers[queue] != nil else { return true }
        let (admits, transition) = self.breakers[queue]!.admits(now: context.wallNow)
        if let transition { self.breakerMoved(queue, transition) }
        return admits
    }

    /// A claim started `job` of `queue`: a half-open breaker's trial.
    func breakerStarted(_ job: Int64, of queue: String) {
        self.breakers.modifyValue(forKey: queue) { $0.started(job) }
    }

    /// An attempt of `job` of `queue` completed (`succeeded`) or failed at `now`.
    func breakerHeard(_ job: Int64, of queue: String, succeeded: Bool, now: Int64) {
        guard self.breakers[queue] != nil else { return }
        let transition = succeeded ? self.breakers[queue]!.succeeded(job) : self.breakers[queue]!.failed(job, now: now)
        if let transition { self.breakerMoved(queue, transition) }
    }

    /// An attempt of `job` of `queue` ended without an outcome: a trial gives its place back.
    func breakerAbandoned(_ job: Int64, of queue: String) {
        self.breakers.modifyValue(forKey: queue) { $0.abandoned(job) }
    }

    /// Sets or removes a queue's breaker; a changed one keeps its state.
    func setBreaker(_ settings: CircuitBreaker.Settings?, of queue: String, _ context: inout BatchContext) {
        guard let settings else {
            if self.breakers.removeValue(forKey: queue) != nil {
                context.readyQueues.insert(queue)
                self.countOpenBreakers()
            }
            return
        }
        var breaker = self.breakers[queue] ?? CircuitBreaker(settings)
        breaker.settings = settings
        self.breakers[queue] = breaker
    }

    /// Closes a queue's breaker by hand (`resume_queue`).
    func resetBreaker(of queue: String) {
        guard self.breakers[queue] != nil, let transition = self.breakers[queue]!.reset() else { return }
        self.breakerMoved(queue, transition, byHand: true)
    }

    /// Offers the queues whose breakers' cooldowns have passed to the parked claims: the
    /// next claim there is the trial.
    func breakersCooled(_ context: inout BatchContext) {
        guard let next = self.nextBreakerTrialAt, next <= context.wallNow else { return }
        for (queue, breaker) in self.breakers {
            if let until = breaker.opensUntil, until <= context.wallNow { context.readyQueues.insert(queue) }
        }
        self.nextBreakerTrialAt = self.breakers.values.compactMap(\.opensUntil).filter { $0 > context.wallNow }.min()
    }

    /// Sets the gauge of breakers not closed: on each change, not each commit.
    private func countOpenBreakers() {
        let queues = self.breakers.values.reduce(0) { $0 + ($1.state == .closed ? 0 : 1) }
        self.metrics.openBreakers.set(queues + self.running.namedLimits.openBreakers.count)
    }

    /// The breakers that are not closed, for `stats` and `health`.
    var breakerStates: [(queue: String, state: CircuitBreaker.State)] {
        self.breakers.compactMap { $0.value.state == .closed ? nil : ($0.key, $0.value.state) }.sorted { $0.queue < $1.queue }
    }

    private func breakerMoved(_ queue: String, _ transition: CircuitBreaker.Transition, byHand: Bool = false) {
        if case .opened(let until) = transition {
            self.nextBreakerTrialAt = min(self.nextBreakerTrialAt ?? .max, until)
        }
        CircuitBreaker.report(transition, of: queue, byHand: byHand, to: self.logger, metrics: self.metrics)
        self.countOpenBreakers()
    }

    /// Logs and counts the changes of the named limits' breakers.
    func reportLimitBreakers() {
        let transitions = self.running.takeLimitTransitions()
        guard !transitions.isEmpty else { return }
        for change in transitions {
            CircuitBreaker.report(change.transition, of: change.name, kind: .limit, byHand: change.byHand, to: self.logger, metrics: self.metrics)
        }
        self.countOpenBreakers()
    }
}

extension CircuitBreaker {
    /// What a breaker guards: a queue, or a named limit.
    enum Guarded: String {
        case queue
        case limit
    }

    /// Logs and counts a breaker's change, as both authorities do.
    static func report(
        _ transition: Transition, of name: String, kind: Guarded = .queue, byHand: Bool, to logger: Logger, metrics: ServerMetrics
    ) {
        let subject: Logger.Metadata = [kind.rawValue: "\(name)"]
        switch transition {
        case .opened(let until):
            let what = kind == .queue ? "no claims from the queue" : "no job naming the limit starts"
            logger.warning(
                "circuit breaker opened: \(what) until its cooldown has passed", metadata: subject.merging(["breaker.until": "\(until)"]) { $1 })
        case .halfOpened:
            logger.notice("circuit breaker half-open: one trial job may start", metadata: subject)
        case .closed:
            logger.notice(byHand ? "circuit breaker closed by hand" : "circuit breaker closed: the trial succeeded", metadata: subject)
        }
        metrics.breakerTransitions.increment()
    }
}
