import BatonCore
import Testing

@Suite("Circuit breakers")
struct CircuitBreakerTests {
    static let settings = CircuitBreaker.Settings(failures: 3, windowMilliseconds: 1_000, cooldownMilliseconds: 5_000)

    @Test("failures within the window open it; a success between resets the count; old failures fall out")
    func opening() {
        var breaker = CircuitBreaker(Self.settings)
        #expect(breaker.failed(1, now: 0) == nil && breaker.failed(2, now: 100) == nil)
        #expect(breaker.succeeded(3) == nil)
        #expect(breaker.failed(4, now: 200) == nil && breaker.failed(5, now: 300) == nil)
        // The first of these is out of the window by the fourth.
        #expect(breaker.failed(6, now: 1_250) == nil)
        #expect(breaker.failed(7, now: 1_260) == .opened(until: 6_260))
        #expect(breaker.admits(now: 6_000) == (false, nil))
    }

    @Test("after the cooldown one trial is admitted; its success closes, its failure reopens")
    func trial() {
        var breaker = CircuitBreaker(Self.settings)
        for job in 1...3 { _ = breaker.failed(Int64(job), now: 0) }
        #expect(breaker.state == .open(until: 5_000))
        #expect(breaker.admits(now: 5_000) == (true, .halfOpened))
        breaker.started(10)
        #expect(breaker.admits(now: 5_001) == (false, nil), "one trial at a time")
        #expect(breaker.failed(2, now: 5_002) == nil, "an older job's failure does not move it")
        #expect(breaker.failed(10, now: 5_100) == .opened(until: 10_100))
        #expect(breaker.admits(now: 10_100) == (true, .halfOpened))
        breaker.started(11)
        breaker.abandoned(11)
        #expect(breaker.admits(now: 10_200) == (true, nil), "a released trial gives its place back")
        breaker.started(12)
        #expect(breaker.succeeded(12) == .closed && breaker.state == .closed)
        #expect(breaker.reset() == nil)
    }
}
