import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A second local user, for tests of what batond allows by the peer's uid. Only root can
/// make one, or act as one: ``available`` says whether this test run can.
public struct ForeignUser: Sendable {
    public let name: String
    public let uid: UInt32
    public let gid: UInt32
    /// Whether ``ensure(_:)`` created the user, so that ``cleanUp()`` removes it.
    public let created: Bool

    /// Whether tests can create users and run processes as them (root, with `runuser`).
    public static var available: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser")
            && FileManager.default.isExecutableFile(atPath: "/usr/sbin/useradd")
    }

    /// The system user `name`, created (without a home or a login shell) if it is missing.
    public static func ensure(_ name: String) throws -> ForeignUser {
        let existed = getpwnam(name) != nil
        if !existed {
            let made = try CommandRun.run("/usr/sbin/useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            // Another test may have made it meanwhile.
            guard made.status == 0 || getpwnam(name) != nil else {
                throw TestServerError("useradd \(name) failed: \(made.output)\(made.errors)")
            }
        }
        guard let entry = getpwnam(name) else { throw TestServerError("no user \(name) after useradd") }
        return ForeignUser(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid, created: !existed)
    }

    /// Removes the user (and its group) if ``ensure(_:)`` created it: a test leaves the
    /// machine's user database as it found it.
    public func cleanUp() {
        guard self.created else { return }
        _ = try? CommandRun.run("/usr/sbin/userdel", [self.name])
    }

    /// A connection to batond's socket made by a process running as this user, so that the
    /// server's SO_PEERCRED sees this user's uid and gid.
    ///
    /// The test's end is one half of a socketpair; the other half is the standard input
    /// and output of `runuser -u USER -- python3`, which relays bytes both ways between it
    /// and the socket it connected to. The relay ends when either side closes.
    public func connect(to socketPath: String) throws -> (client: JSONLineClient, relay: Process) {
        var ends: [Int32] = [0, 0]
        #if canImport(Glibc)
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else { throw LineConnection.Failure.io(errno: errno) }
        #else
        guard socketpair(AF_UNIX, SOCK_STREAM, 0, &ends) == 0 else { throw LineConnection.Failure.io(errno: errno) }
        #endif
        let relay = Process()
        relay.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
        relay.arguments = ["-u", self.name, "--", "/usr/bin/python3", "-c", Self.relayScript, socketPath]
        let theirs = FileHandle(fileDescriptor: ends[1], closeOnDealloc: true)
        relay.standardInput = theirs
        relay.standardOutput = theirs
        // runuser says "Session terminated" when a test stops the relay: not worth showing.
        relay.standardError = FileHandle.nullDevice
        try relay.run()
        try theirs.close()
        return (JSONLineClient(connection: LineConnection(descriptor: ends[0])), relay)
    }

    private static let relayScript = """
        import socket, sys, threading
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.connect(sys.argv[1])
        test = socket.socket(fileno=0)
        def pump(source, sink):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        threading.Thread(target=pump, args=(test, server), daemon=True).start()
        pump(server, test)
        """
}
