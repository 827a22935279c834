import BatonCore
import Testing

@Suite("Sequences reserved in blocks")
struct ReservedSequenceTests {
    @Test("values increase by one and a reservation is due once per block")
    func blocks() {
        var sequence = ReservedSequence(resumingAfter: 0, blockSize: 3)
        let issued = (0..<7).map { _ in sequence.next() }
        #expect(issued.map(\.value) == [1, 2, 3, 4, 5, 6, 7])
        #expect(issued.map(\.reservation) == [3, nil, nil, 6, nil, nil, 9])
    }

    @Test("after a restart the sequence resumes past the reservation, never reissuing a value")
    func resume() {
        var before = ReservedSequence(resumingAfter: 0, blockSize: 100)
        let used = before.next()
        #expect(used.reservation == 100)
        var after = ReservedSequence(resumingAfter: 100, blockSize: 100)
        let next = after.next()
        #expect(next.value == 101)
        #expect(next.value > used.value)
        #expect(next.reservation == 200)
    }
}
