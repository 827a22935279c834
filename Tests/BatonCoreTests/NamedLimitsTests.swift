import BatonCore
import Testing

@Suite("Named limits")
struct NamedLimitsTests {
    @Test("a rate admits count starts in any span of per_ms, and wakes the held queue when the window opens")
    func slidingWindow() {
        var limits = NamedLimits()
        var freed = Set<String>()
        limits.set("api", to: LimitSettings(rate: .init(count: 2, perMilliseconds: 100)), freeing: &freed)
        let admitted1 = limits.admits(["api"], queue: "q", now: 0)
        #expect(admitted1)
        limits.started(["api"], job: 1, now: 0)
        let admitted2 = limits.admits(["api"], queue: "q", now: 40)
        #expect(admitted2)
        limits.started(["api"], job: 1, now: 40)
        let admitted3 = limits.admits(["api"], queue: "q", now: 99)
        #expect(!admitted3, "two starts in the last 100 ms")
        #expect(limits.nextWakeup == 100, "the window opens when the first start leaves it")
        limits.wake(now: 99, freeing: &freed)
        #expect(freed.isEmpty)
        limits.wake(now: 100, freeing: &freed)
        #expect(freed == ["q"])
        let admitted4 = limits.admits(["api"], queue: "q", now: 100)
        #expect(admitted4)
        limits.started(["api"], job: 1, now: 100)
        let admitted5 = limits.admits(["api"], queue: "q", now: 139)
        #expect(!admitted5, "40 and 100 are within 100 ms of 139")
        let admitted6 = limits.admits(["api"], queue: "q", now: 140)
        #expect(admitted6)
    }

    @Test("max_running counts every job naming the limit, set before or after it started")
    func maxRunning() {
        var limits = NamedLimits()
        var freed = Set<String>()
        limits.started(["gpu"], job: 1, now: 0)
        limits.set("gpu", to: LimitSettings(maxRunning: 1), freeing: &freed)
        let admitted7 = limits.admits(["gpu", "other"], queue: "embed", now: 1)
        #expect(!admitted7, "the job started before the limit counts")
        limits.ended(["gpu"], job: 1, freeing: &freed)
        #expect(freed == ["embed"], "the queue held back is offered again")
        let admitted8 = limits.admits(["gpu"], queue: "embed", now: 2)
        #expect(admitted8)
        #expect(limits.uses.map(\.name) == ["gpu"], "an idle name without settings is forgotten; a set one is listed")
    }

    @Test("a template limits each name with its prefix on its own; a name's own setting wins; the longest template applies")
    func templates() {
        var limits = NamedLimits()
        var freed = Set<String>()
        limits.set("tenant:*", to: LimitSettings(maxRunning: 1), freeing: &freed)
        limits.set("tenant:eu:*", to: LimitSettings(maxRunning: 3), freeing: &freed)
        limits.set("tenant:7", to: LimitSettings(maxRunning: 2), freeing: &freed)
        #expect(limits.rule(for: "tenant:42")?.rule == "tenant:*")
        #expect(limits.rule(for: "tenant:eu:9")?.rule == "tenant:eu:*")
        #expect(limits.rule(for: "tenant:7")?.rule == "tenant:7")
        #expect(limits.rule(for: "tenants") == nil)
        limits.started(["tenant:42"], job: 1, now: 0)
        let admitted9 = limits.admits(["tenant:42"], queue: "q", now: 0)
        #expect(!admitted9)
        let admitted10 = limits.admits(["tenant:43"], queue: "q", now: 0)
        #expect(admitted10, "each tenant has its own count")
        limits.set("tenant:*", to: LimitSettings(), freeing: &freed)
        #expect(limits.rule(for: "tenant:42") == nil, "an emptied template is removed")
        let admitted11 = limits.admits(["tenant:42"], queue: "q", now: 0)
        #expect(admitted11)
    }

    @Test("names in use are forgotten once idle, so state stays bounded by what runs")
    func forgetting() {
        var limits = NamedLimits()
        var freed = Set<String>()
        limits.set("t:*", to: LimitSettings(rate: .init(count: 1, perMilliseconds: 50)), freeing: &freed)
        for tenant in 0..<100 {
            limits.started(["t:\(tenant)"], job: Int64(tenant), now: 0)
            limits.ended(["t:\(tenant)"], job: Int64(tenant), freeing: &freed)
        }
        #expect(limits.uses.count == 101, "their windows still hold a start")
        limits.wake(now: 50, freeing: &freed)
        #expect(limits.uses.map(\.name) == ["t:*"], "\(limits.uses.map(\.name))")
        #expect(limits.nextWakeup == nil)
    }

    @Test("a limit's breaker counts failures of its jobs, opens, wakes the held queue at the cooldown's end, and set closes it by hand")
    func breaker() {
        var limits = NamedLimits()
        var freed = Set<String>()
        limits.set("api", to: LimitSettings(breaker: .init(failures: 2, windowMilliseconds: 1_000, cooldownMilliseconds: 100)), freeing: &freed)
        for job in Int64(1)...2 {
            limits.started(["api"], job: job, now: 0)
            limits.heard(["api"], job: job, succeeded: false, now: 10)
            limits.ended(["api"], job: job, freeing: &freed)
        }
        #expect(limits.takeTransitions().map(\.transition) == [.opened(until: 110)])
        let admitted = limits.admits(["api"], queue: "q", now: 50)
        #expect(!admitted)
        #expect(limits.nextWakeup == 110)
        freed = []
        limits.wake(now: 110, freeing: &freed)
        #expect(freed == ["q"], "the held queue is offered when the cooldown ends")
        let trial = limits.admits(["api"], queue: "q", now: 110)
        #expect(trial)
        limits.started(["api"], job: 3, now: 110)
        let second = limits.admits(["api"], queue: "q", now: 111)
        #expect(!second, "one trial at a time")
        limits.set("api", to: LimitSettings(breaker: .init(failures: 2, windowMilliseconds: 1_000, cooldownMilliseconds: 100)), freeing: &freed)
        #expect(limits.takeTransitions().last == NamedLimits.Transition(name: "api", transition: .closed, byHand: true))
        let again = limits.admits(["api"], queue: "q", now: 112)
        #expect(again)
    }
}
