import BatonCore
import Testing

@Suite("Limit holds on a shared store")
struct LimitHoldsTests {
    @Test("a claim's decision reports the limits that held it back, with when a window opens")
    func holdsFromADecision() {
        var limits = NamedLimits()
        var freed = Set<String>()
        limits.set("api", to: LimitSettings(rate: .init(count: 1, perMilliseconds: 100)), freeing: &freed)
        limits.set("db", to: LimitSettings(maxRunning: 1), freeing: &freed)
        limits.restore("api", running: 0, starts: [30])
        limits.restore("db", running: 1, starts: [])
        let api = limits.admits(["api"], queue: "extract", now: 50)
        let db = limits.admits(["db"], queue: "embed", now: 50)
        #expect(!api && !db)
        #expect(Set(limits.holds) == [
            LimitHolds.Hold(name: "api", queues: ["extract"], wakeAt: 130),
            LimitHolds.Hold(name: "db", queues: ["embed"], wakeAt: nil),
        ])
    }

    @Test("a freed limit gives back its queues once; a window's wakeup comes due on the clock")
    func freeAndWake() {
        var holds = LimitHolds()
        holds.hold(LimitHolds.Hold(name: "db", queues: ["embed"], wakeAt: nil))
        holds.hold(LimitHolds.Hold(name: "api", queues: ["extract"], wakeAt: 130))
        holds.hold(LimitHolds.Hold(name: "api", queues: ["embed"], wakeAt: 120))
        #expect(holds.nextWakeup == 120)
        var queues = Set<String>()
        holds.wake(now: 119, into: &queues)
        #expect(queues.isEmpty)
        holds.wake(now: 120, into: &queues)
        #expect(queues == ["extract", "embed"], "the earliest wakeup frees every queue the name held")
        queues = []
        holds.wake(now: 200, into: &queues)
        #expect(queues.isEmpty, "the later wakeup was superseded")
        holds.freed("db", into: &queues)
        #expect(queues == ["embed"])
        queues = []
        holds.freed("db", into: &queues)
        #expect(queues.isEmpty && holds.isEmpty)
    }

    @Test("a template's change frees every name it governs, and nothing else")
    func templateFreesItsNames() {
        var holds = LimitHolds()
        holds.hold(LimitHolds.Hold(name: "tenant:1", queues: ["a"], wakeAt: 10))
        holds.hold(LimitHolds.Hold(name: "tenant:2", queues: ["b"], wakeAt: nil))
        holds.hold(LimitHolds.Hold(name: "openai", queues: ["c"], wakeAt: nil))
        var queues = Set<String>()
        holds.freed("tenant:*", into: &queues)
        #expect(queues == ["a", "b"])
        queues = []
        holds.wake(now: 10, into: &queues)
        #expect(queues.isEmpty, "a freed name's wakeup is gone with it")
        holds.removeAll()
        #expect(holds.isEmpty && holds.nextWakeup == nil)
    }
}
