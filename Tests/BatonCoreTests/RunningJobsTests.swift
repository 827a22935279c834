import BatonCore
import Testing

@Suite("Running jobs: leases and admission, on a clock the test controls")
struct RunningJobsTests {
    let token = FencingToken(rawValue: 7)

    @Test("a lease is live until its deadline and expired at it")
    func liveThenExpired() {
        var table = RunningJobs()
        let lease = table.start(jobID: 1, token: self.token, duration: 100, now: 1_000, queue: "q")
        #expect(lease.deadline == 1_100)
        #expect(table.check(jobID: 1, token: self.token, now: 1_099) == .live(lease))
        #expect(table.check(jobID: 1, token: self.token, now: 1_100) == .expired(lease))
    }

    @Test("another token does not hold the job")
    func wrongToken() {
        var table = RunningJobs()
        table.start(jobID: 1, token: self.token, duration: 100, now: 0, queue: "q")
        #expect(table.check(jobID: 1, token: self.token.next(), now: 1) == .notHeld)
        #expect(table.check(jobID: 2, token: self.token, now: 1) == .notHeld)
    }

    @Test("renewing moves the deadline; the sweep honours the new one")
    func renewal() {
        var table = RunningJobs()
        var freed = Set<String>()
        table.start(jobID: 1, token: self.token, duration: 100, now: 0, queue: "q")
        let renewed = table.renew(jobID: 1, token: self.token, now: 90)
        #expect(renewed?.deadline == 190)
        #expect(table.removeExpired(now: 150, freeing: &freed).isEmpty, "the old deadline no longer counts")
        #expect(table.removeExpired(now: 190, freeing: &freed).map(\.jobID) == [1])
        #expect(table.count == 0)
    }

    @Test("renewing with a new period keeps it for later renewals")
    func renewalWithDuration() {
        var table = RunningJobs()
        table.start(jobID: 1, token: self.token, duration: 100, now: 0, queue: "q")
        #expect(table.renew(jobID: 1, token: self.token, duration: 1_000, now: 50)?.deadline == 1_050)
        #expect(table.renew(jobID: 1, token: self.token, now: 60)?.deadline == 1_060)
    }

    @Test("an expired lease cannot be renewed")
    func noRenewalAfterDeadline() {
        var table = RunningJobs()
        table.start(jobID: 1, token: self.token, duration: 100, now: 0, queue: "q")
        #expect(table.renew(jobID: 1, token: self.token, now: 100) == nil)
    }

    @Test("revoked and replaced leases leave no ghosts behind")
    func revokeAndRegrant() {
        var table = RunningJobs()
        var freed = Set<String>()
        table.start(jobID: 1, token: self.token, duration: 100, now: 0, queue: "q")
        table.end(jobID: 1, freeing: &freed)
        let second = table.start(jobID: 1, token: self.token.next(), duration: 500, now: 10, queue: "q")
        #expect(table.removeExpired(now: 200, freeing: &freed).isEmpty, "the revoked lease's deadline expires nothing")
        #expect(table.check(jobID: 1, token: second.token, now: 200) == .live(second))
        #expect(table.removeExpired(now: 510, freeing: &freed).map(\.lease.token) == [second.token])
    }

    @Test("expiry comes in deadline order, and the next deadline is known")
    func ordering() {
        var table = RunningJobs()
        var freed = Set<String>()
        for (job, duration) in [(1, 300), (2, 100), (3, 200)] {
            table.start(jobID: Int64(job), token: FencingToken(rawValue: Int64(job)), duration: Int64(duration), now: 0, queue: "q")
        }
        #expect(table.nextDeadline == 100)
        #expect(table.removeExpired(now: 250, freeing: &freed).map(\.jobID) == [2, 3])
        #expect(table.nextDeadline == 300)
    }

    @Test("many heartbeats do not grow the heap")
    func heartbeatsStayCheap() {
        var table = RunningJobs()
        var freed = Set<String>()
        table.start(jobID: 1, token: self.token, duration: 100, now: 0, queue: "q")
        for now in stride(from: Int64(10), to: 10_000, by: 10) {
            _ = table.renew(jobID: 1, token: self.token, now: now)
            _ = table.removeExpired(now: now, freeing: &freed)
        }
        #expect(table.count == 1)
        #expect(table.check(jobID: 1, token: self.token, now: 10_000) == .live(table[1]!.lease))
    }
}

@Suite("Running jobs: the admission rules")
struct AdmissionTests {
    @Test("a queue at its limit is full until one of its jobs ends, and is then named as freed")
    func queueLimit() {
        var jobs = RunningJobs()
        var freed = Set<String>()
        jobs.setLimit(2, of: "pdf")
        jobs.start(jobID: 1, token: FencingToken(rawValue: 1), duration: 100, now: 0, queue: "pdf")
        #expect(!jobs.isFull("pdf"))
        jobs.start(jobID: 2, token: FencingToken(rawValue: 2), duration: 100, now: 0, queue: "pdf")
        jobs.start(jobID: 3, token: FencingToken(rawValue: 3), duration: 100, now: 0, queue: "mail")
        #expect(jobs.isFull("pdf") && !jobs.isFull("mail") && jobs.runningCount(of: "pdf") == 2)
        jobs.end(jobID: 3, freeing: &freed)
        #expect(freed.isEmpty, "ending a job of an unlimited queue frees nothing")
        jobs.end(jobID: 1, freeing: &freed)
        #expect(freed == ["pdf"] && !jobs.isFull("pdf"))
        let tightened = jobs.setLimit(1, of: "pdf")
        #expect(!tightened && jobs.isFull("pdf"))
        let lifted = jobs.setLimit(nil, of: "pdf")
        #expect(lifted, "lifting the limit lets held-back jobs start")
    }

    @Test("a key is held while its job runs; ending it frees the queues that passed jobs over for it")
    func concurrencyKeys() {
        var jobs = RunningJobs()
        var freed = Set<String>()
        jobs.start(jobID: 1, token: FencingToken(rawValue: 1), duration: 100, now: 0, queue: "sync", concurrencyKey: "tenant-7")
        #expect(jobs.isHeld("tenant-7") && !jobs.isHeld("tenant-8"))
        jobs.passedOver(key: "tenant-7", in: "sync")
        jobs.passedOver(key: "tenant-7", in: "export")
        #expect(jobs.removeExpired(now: 100, freeing: &freed).map(\.jobID) == [1], "an expiry ends the run like any other end")
        #expect(!jobs.isHeld("tenant-7") && freed == ["sync", "export"])
        #expect(jobs.count == 0 && jobs.runningCount(of: "sync") == 0)
    }

    @Test("one record answers for the lease, the queue and the holder; a renewal moves the holder")
    func oneRecord() {
        var jobs = RunningJobs()
        jobs.start(
            jobID: 9, token: FencingToken(rawValue: 4), duration: 100, now: 0, holder: 1000, queue: "pdf",
            concurrencyKey: "k", startedAt: 1_700, connection: 3)
        #expect(jobs[9]?.queue == "pdf" && jobs[9]?.startedAt == 1_700 && jobs[9]?.lease.holder == 1000)
        #expect(jobs.jobsByConnection == [3: [9]])
        _ = jobs.renew(jobID: 9, token: FencingToken(rawValue: 4), now: 50, connection: 5)
        #expect(jobs.jobsByConnection == [5: [9]] && jobs[9]?.lease.deadline == 150)
        #expect(jobs.started(before: 1_701).map(\.jobID) == [9] && jobs.started(before: 1_700).isEmpty)
    }
}
