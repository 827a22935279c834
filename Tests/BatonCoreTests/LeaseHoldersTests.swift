import BatonCore
import Testing

@Suite("Lease holders")
struct LeaseHoldersTests {
    let token = FencingToken(rawValue: 7)

    @Test("a claim binds its lease to the claiming process; a reconnect of that process keeps it bound")
    func bindingFollowsTheProcess() {
        var holders = LeaseHolders()
        holders.claimed(1, token: self.token, connection: 10, process: 500)
        holders.claimed(2, token: self.token, connection: 10, process: nil)  // detached
        #expect(holders.bound(to: 500, on: 10).map(\.id) == [1])
        holders.renewed(1, token: self.token, connection: 11, process: 500)
        #expect(holders.bound(to: 500, on: 10).isEmpty, "the lease moved to the new connection")
        #expect(holders.bound(to: 500, on: 11).map(\.id) == [1])
        #expect(holders.jobsByConnection == [10: [2], 11: [1]])
    }

    @Test("a renewal from another process unbinds the lease; an ended lease is forgotten")
    func otherProcessUnbinds() {
        var holders = LeaseHolders()
        holders.claimed(1, token: self.token, connection: 10, process: 500)
        holders.renewed(1, token: self.token, connection: 12, process: 600)
        #expect(holders[1]?.process == nil && holders[1]?.connection == 12)
        #expect(holders.bound(to: 600, on: 12).isEmpty && holders.bound(to: 500, on: 10).isEmpty)
        // After a restart nothing is bound until a claim binds it.
        holders.renewed(3, token: self.token, connection: 12, process: 600)
        #expect(holders[3]?.process == nil)
        holders.ended(1)
        holders.ended(3)
        #expect(holders.count == 0 && holders.jobsByConnection.isEmpty)
    }
}
