import BatonCore
import Testing

@Suite("Backoff and the retry rule")
struct BackoffPolicyTests {
    @Test("the default doubles from one second and caps at sixty")
    func standardGrowth() {
        let policy = BackoffPolicy.standard
        #expect((1...8).map { policy.baseDelay(afterAttempt: $0) } == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000])
    }

    @Test("jitter keeps the delay between half and all of the base")
    func jitterBounds() {
        let policy = BackoffPolicy.standard
        #expect(policy.delay(afterAttempt: 3, jitter: 0) == 2_000)
        #expect(policy.delay(afterAttempt: 3, jitter: 0.5) == 3_000)
        #expect(policy.delay(afterAttempt: 3, jitter: 0.999_999) <= 4_000)
        #expect(policy.delay(afterAttempt: 3, jitter: 7) == 4_000, "out-of-range jitter is clamped")
    }

    @Test("huge attempt numbers stay at the cap instead of overflowing")
    func noOverflow() {
        let policy = BackoffPolicy(initialMilliseconds: 1_000, factor: 10, maximumMilliseconds: 5_000)
        #expect(policy.baseDelay(afterAttempt: 10_000) == 5_000)
    }

    @Test("a constant policy stays constant")
    func constant() {
        let policy = BackoffPolicy(initialMilliseconds: 250, factor: 1, maximumMilliseconds: 250)
        #expect(policy.baseDelay(afterAttempt: 1) == 250)
        #expect(policy.baseDelay(afterAttempt: 9) == 250)
    }

    @Test("an attempt with attempts left retries after the backoff")
    func retriesWhileAttemptsRemain() {
        let decision = RetryDecision.afterUnsuccessfulAttempt(2, maxAttempts: 4, backoff: .standard, jitter: 0, now: 10_000)
        #expect(decision == .retry(runAt: 11_000))
        #expect(decision.state == .retrying)
    }

    @Test("the last attempt fails for good")
    func lastAttemptFails() {
        #expect(RetryDecision.afterUnsuccessfulAttempt(4, maxAttempts: 4, backoff: .standard, jitter: 0, now: 0) == .fail)
    }

    @Test("a worker can forbid the retry, or choose its delay")
    func workerChoices() {
        #expect(RetryDecision.afterUnsuccessfulAttempt(1, maxAttempts: 4, retryAllowed: false, backoff: .standard, jitter: 0, now: 0) == .fail)
        #expect(
            RetryDecision.afterUnsuccessfulAttempt(1, maxAttempts: 4, retryInMilliseconds: 42, backoff: .standard, jitter: 0.9, now: 100)
                == .retry(runAt: 142)
        )
    }
}
