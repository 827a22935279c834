import BatonCore
import Testing

@Suite("The job state machine")
struct JobStateTests {
    @Test("the moves of the design are allowed", arguments: [
        (JobState.queued, JobState.running),
        (.queued, .cancelled),
        (.running, .completed),
        (.running, .retrying),
        (.running, .failed),
        (.running, .cancelled),
        (.running, .paused),
        (.running, .queued),
        (.retrying, .running),
        (.retrying, .failed),
        (.paused, .queued),
        (.paused, .cancelled),
        (.failed, .queued),
        (.cancelled, .queued),
    ])
    func allowed(from: JobState, to: JobState) throws {
        #expect(from.canMove(to: to))
        try from.checkMove(to: to)
    }

    @Test("moves outside the machine are refused with both states named", arguments: [
        (JobState.completed, JobState.running),
        (.completed, .queued),
        (.failed, .running),
        (.cancelled, .running),
        (.queued, .completed),
        (.queued, .failed),
        (.paused, .running),
        (.retrying, .completed),
    ])
    func refused(from: JobState, to: JobState) {
        #expect(!from.canMove(to: to))
        #expect(throws: InvalidTransition(from: from, to: to)) { try from.checkMove(to: to) }
        #expect(InvalidTransition(from: from, to: to).description.contains(to.rawValue))
    }

    @Test("the table and the fast check agree on every pair of states")
    func tableMatchesCheck() {
        for from in JobState.allCases {
            for to in JobState.allCases {
                #expect(from.canMove(to: to) == from.allowedTargets.contains(to), "\(from) → \(to)")
            }
        }
    }

    @Test("a completed job is final")
    func completedIsFinal() {
        #expect(JobState.completed.allowedTargets.isEmpty)
    }

    @Test("finished and claimable states")
    func classification() {
        #expect(JobState.allCases.filter(\.isFinished) == [.completed, .failed, .cancelled])
        #expect(JobState.allCases.filter(\.isClaimable) == [.queued, .retrying])
    }
}

@Suite("The store's moves")
struct JobMoveTests {
    @Test("every move the store declares is allowed by the state machine from each state it starts in")
    func declaredMovesAreAllowed() {
        for move in JobMove.declared {
            #expect(move.isAllowed, "\(move)")
        }
    }

    @Test("a move the table does not allow is caught, from any one of its starting states")
    func disallowedMovesAreCaught() {
        #expect(!JobMove(from: [.running, .completed], to: .queued).isAllowed)
        #expect(!JobMove(from: [.paused], to: .running).isAllowed)
        #expect(!JobMove(from: [], to: .queued).isAllowed)
    }

    @Test("a claim starts from exactly the claimable states")
    func claimStartsFromClaimableStates() {
        #expect(JobMove.claim.from == JobState.allCases.filter(\.isClaimable))
    }
}
