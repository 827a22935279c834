import BatonCore
import Testing

@Suite("The lease clock stands still while the authority is stalled")
struct LeaseClockTests {
    @Test("observations at the pulse find no stall; lease time is monotonic time")
    func steadyPulse() {
        var clock = LeaseClock(pulseMilliseconds: 250, toleranceMilliseconds: 250)
        for now in stride(from: Int64(1_000), through: 10_000, by: 250) {
            #expect(clock.observe(now) == 0)
        }
        #expect(clock.observe(10_490) == 0, "a late pulse within the tolerance is no stall")
        #expect(clock.now(monotonic: 10_490) == 10_490)
    }

    @Test("a 5 s gap is a stall: lease time skips it, so a lease due in 2 s is still due in 2 s")
    func stallIsNotLeaseTime() {
        var clock = LeaseClock(pulseMilliseconds: 250, toleranceMilliseconds: 250)
        var table = RunningJobs()
        var freed = Set<String>()
        clock.observe(1_000)
        let token = FencingToken(rawValue: 1)
        table.start(jobID: 1, token: token, duration: 3_000, now: clock.now(monotonic: 1_000), queue: "q")
        for now in stride(from: Int64(1_250), through: 2_000, by: 250) {
            #expect(clock.observe(now) == 0)
        }
        #expect(table.renew(jobID: 1, token: token, now: clock.now(monotonic: 2_000)) != nil)
        // SIGSTOP for 5 s; the next observation is 5 s later.
        #expect(clock.observe(7_000) == 4_750)
        let now = clock.now(monotonic: 7_000)
        #expect(table.removeExpired(now: now, freeing: &freed).isEmpty, "the lease is not expired by the server's stall")
        #expect(table.check(jobID: 1, token: token, now: now) != .notHeld)
        // The expiry timer is set on monotonic time: the first deadline moved by the stall.
        #expect(clock.monotonicTime(ofLeaseTime: table.nextDeadline!) == 4_000 + 4_750)
        // A worker that then goes quiet still loses the lease, a lease period later.
        #expect(table.removeExpired(now: clock.now(monotonic: 9_750), freeing: &freed).count == 1)
    }

    @Test("the authority's own work is not a stall; a request heard meanwhile is judged when it arrived")
    func ownWorkIsNotAStall() {
        var clock = LeaseClock(pulseMilliseconds: 250, toleranceMilliseconds: 250)
        clock.observe(1_000)
        // A batch runs from 1_000 to 23_000 (a slow scrape, a long fsync).
        clock.rest(at: 23_000)
        #expect(clock.observe(23_100) == 0)
        #expect(clock.leaseTime(ofMonotonic: 1_500) == 1_500, "a heartbeat read at 1.5 s counts at 1.5 s")
    }

    @Test("a request that arrived before a stall is judged at its arrival, not granted the stall")
    func arrivalBeforeAStall() {
        var clock = LeaseClock(pulseMilliseconds: 250, toleranceMilliseconds: 250)
        clock.observe(1_000)
        #expect(clock.observe(6_000) == 4_750)
        #expect(clock.leaseTime(ofMonotonic: 900) == 900)
        #expect(clock.leaseTime(ofMonotonic: 6_100) == 6_100 - 4_750)
        #expect(clock.now(monotonic: 6_000) == 1_250)
    }
}
