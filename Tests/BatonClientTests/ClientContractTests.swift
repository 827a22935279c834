import BatonClient
import BatonProtocol
import Foundation
import Testing

/// The Swift client's copy of the rules in PROTOCOL.md's "What every client does" must say
/// what the document says: the document is the authority, and this keeps them together.
@Suite("The client contract, as PROTOCOL.md states it")
struct ClientContractTests {
    /// The backquoted first cells of the table under `heading` in PROTOCOL.md.
    static func documentedNames(under heading: String) throws -> Set<String> {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("protocol/PROTOCOL.md"), encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let start = try #require(lines.firstIndex { $0 == "### \(heading)" }, "PROTOCOL.md has no section \(heading)")
        var names: Set<String> = []
        for line in lines[(start + 1)...] {
            if line.hasPrefix("#") { break }
            guard line.hasPrefix("| `") else { continue }
            names.insert(String(line.dropFirst(3).prefix { $0 != "`" }))
        }
        return names
    }

    @Test("the ops the client resends are the documented ones")
    func resendableOps() throws {
        let documented = try Self.documentedNames(under: "Ops safe to resend")
        #expect(documented.count >= 10)
        #expect(ClientContract.resendableOps == documented)
    }

    @Test("the codes that end a lease are the documented ones")
    func leaseEndingCodes() throws {
        let documented = try Self.documentedNames(under: "Codes that end a lease")
        #expect(Set(ClientContract.leaseEndingCodes.map(\.description)) == documented)
    }

    @Test("the codes retried later are the documented ones")
    func retryLaterCodes() throws {
        let documented = try Self.documentedNames(under: "Codes to retry later")
        #expect(Set(ClientContract.retryLaterCodes.map(\.description)) == documented)
    }

    @Test("the socket is the explicit path, else $BATON_SOCKET, else baton-data/baton.sock")
    func socketDiscovery() {
        #expect(ClientContract.socketPath(explicit: "/a.sock", environment: ["BATON_SOCKET": "/b.sock"]) == "/a.sock")
        #expect(ClientContract.socketPath(environment: ["BATON_SOCKET": "/b.sock"]) == "/b.sock")
        #expect(ClientContract.socketPath(environment: [:]) == "baton-data/baton.sock")
        #expect(ClientContract.socketPath(environment: ["BATON_SOCKET": ""]) == "baton-data/baton.sock")
    }
}
