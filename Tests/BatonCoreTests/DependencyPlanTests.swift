import BatonCore
import Testing

@Suite("What a new job's dependencies make of it")
struct DependencyPlanTests {
    @Test("a job that does not exist is refused, before anything else counts")
    func missing() {
        #expect(DependencyPlan(after: [1, 9, 2], states: [1: .failed, 2: .queued]) == .missing(9))
    }

    @Test("a failed or cancelled dependency cancels the new job at once, naming it")
    func dead() {
        #expect(DependencyPlan(after: [1, 2], states: [1: .completed, 2: .failed]) == .cancelled(reason: "dependency 2 failed"))
        #expect(DependencyPlan(after: [3], states: [3: .cancelled]) == .cancelled(reason: "dependency 3 was cancelled"))
    }

    @Test("completed dependencies no longer count; the rest are waited on once each, in order")
    func waiting() {
        #expect(DependencyPlan(after: [], states: [:]) == .ready)
        #expect(DependencyPlan(after: [1, 1], states: [1: .completed]) == .ready)
        #expect(DependencyPlan(after: [4, 1, 5, 4], states: [1: .completed, 4: .running, 5: .paused]) == .waiting(on: [4, 5]))
    }
}
