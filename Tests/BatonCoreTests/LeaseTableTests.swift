import BatonCore
import Testing

@Suite("The lease table, on a clock the test controls")
struct LeaseTableTests {
    let token = FencingToken(rawValue: 7)

    @Test("a lease is live until its deadline and expired at it")
    func liveThenExpired() {
        var table = LeaseTable()
        let lease = table.grant(jobID: 1, token: self.token, duration: 100, now: 1_000)
        #expect(lease.deadline == 1_100)
        #expect(table.check(jobID: 1, token: self.token, now: 1_099) == .live(lease))
        #expect(table.check(jobID: 1, token: self.token, now: 1_100) == .expired(lease))
    }

    @Test("another token does not hold the job")
    func wrongToken() {
        var table = LeaseTable()
        table.grant(jobID: 1, token: self.token, duration: 100, now: 0)
        #expect(table.check(jobID: 1, token: self.token.next(), now: 1) == .notHeld)
        #expect(table.check(jobID: 2, token: self.token, now: 1) == .notHeld)
    }

    @Test("renewing moves the deadline; the sweep honours the new one")
    func renewal() {
        var table = LeaseTable()
        table.grant(jobID: 1, token: self.token, duration: 100, now: 0)
        let renewed = table.renew(jobID: 1, token: self.token, now: 90)
        #expect(renewed?.deadline == 190)
        #expect(table.removeExpired(now: 150).isEmpty, "the old deadline no longer counts")
        #expect(table.removeExpired(now: 190).map(\.jobID) == [1])
        #expect(table.count == 0)
    }

    @Test("renewing with a new period keeps it for later renewals")
    func renewalWithDuration() {
        var table = LeaseTable()
        table.grant(jobID: 1, token: self.token, duration: 100, now: 0)
        #expect(table.renew(jobID: 1, token: self.token, duration: 1_000, now: 50)?.deadline == 1_050)
        #expect(table.renew(jobID: 1, token: self.token, now: 60)?.deadline == 1_060)
    }

    @Test("an expired lease cannot be renewed")
    func noRenewalAfterDeadline() {
        var table = LeaseTable()
        table.grant(jobID: 1, token: self.token, duration: 100, now: 0)
        #expect(table.renew(jobID: 1, token: self.token, now: 100) == nil)
    }

    @Test("revoked and replaced leases leave no ghosts behind")
    func revokeAndRegrant() {
        var table = LeaseTable()
        table.grant(jobID: 1, token: self.token, duration: 100, now: 0)
        table.revoke(jobID: 1)
        let second = table.grant(jobID: 1, token: self.token.next(), duration: 500, now: 10)
        #expect(table.removeExpired(now: 200).isEmpty, "the revoked lease's deadline expires nothing")
        #expect(table.check(jobID: 1, token: second.token, now: 200) == .live(second))
        #expect(table.removeExpired(now: 510).map(\.token) == [second.token])
    }

    @Test("expiry comes in deadline order, and the next deadline is known")
    func ordering() {
        var table = LeaseTable()
        for (job, duration) in [(1, 300), (2, 100), (3, 200)] {
            table.grant(jobID: Int64(job), token: FencingToken(rawValue: Int64(job)), duration: Int64(duration), now: 0)
        }
        #expect(table.nextDeadline == 100)
        #expect(table.removeExpired(now: 250).map(\.jobID) == [2, 3])
        #expect(table.nextDeadline == 300)
    }

    @Test("many heartbeats do not grow the heap")
    func heartbeatsStayCheap() {
        var table = LeaseTable()
        table.grant(jobID: 1, token: self.token, duration: 100, now: 0)
        for now in stride(from: Int64(10), to: 10_000, by: 10) {
            _ = table.renew(jobID: 1, token: self.token, now: now)
            _ = table.removeExpired(now: now)
        }
        #expect(table.count == 1)
        #expect(table.check(jobID: 1, token: self.token, now: 10_000) == .live(table[1]!))
    }
}
