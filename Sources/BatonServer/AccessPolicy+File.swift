import BatonCore
import Foundation
import NIOConcurrencyHelpers
import TOMLKit

#if canImport(Glibc)
import Glibc
#endif

/// A policy file that cannot be used, with what is wrong and where.
public struct AccessPolicyError: Error, CustomStringConvertible {
    public var description: String

    init(_ path: String, _ problem: String) {
        self.description = "access policy \(path): \(problem)"
    }
}

extension AccessPolicy {
    /// Reads an access policy from a TOML file of `[[grant]]` tables, such as:
    ///
    /// ```toml
    /// [[grant]]
    /// group = "webapp"              # or user = "name", uid = 1001, gid = 1001
    /// queues = ["emails", "parse-*"]
    /// roles = ["produce", "read"]   # produce, work, read, admin
    /// ```
    ///
    /// Users and groups named are looked up now, in the system's user database: a group grant
    /// covers the group's listed members and the users whose primary group it is, as they are
    /// at this reading (SIGHUP reads the file again).
    ///
    /// - Throws: ``AccessPolicyError`` for a file that cannot be read or parsed, an unknown
    ///   key, role, user or group, or a grant missing its principal, queues or roles. Nothing
    ///   is guessed: a policy either means exactly what it says, or is refused.
    public static func load(contentsOf path: String) throws -> AccessPolicy {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw AccessPolicyError(path, "cannot be read as UTF-8 text")
        }
        let table = try Self.parse(text, path: path)
        if let unknown = table.keys.first(where: { $0 != "grant" }) {
            throw AccessPolicyError(path, "unknown key \"\(unknown)\": the file holds [[grant]] tables only")
        }
        guard let entries = table["grant"]?.array else {
            throw AccessPolicyError(path, "no [[grant]] tables: such a policy would refuse everything")
        }
        var grants: [Grant] = []
        for (index, entry) in entries.enumerated() {
            guard let entry = entry.table else {
                throw AccessPolicyError(path, "grant \(index + 1) is not a table: write it as [[grant]]")
            }
            switch Result(catching: { () throws(GrantProblem) in try Grant(entry) }) {
            case .success(let grant): grants.append(grant)
            case .failure(let problem): throw AccessPolicyError(path, "grant \(index + 1): \(problem.description)")
            }
        }
        return AccessPolicy(grants: grants)
    }

    private static func parse(_ text: String, path: String) throws -> TOMLTable {
        do {
            return try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw AccessPolicyError(
                path, "not valid TOML at line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)")
        } catch {
            throw AccessPolicyError(path, "not valid TOML: \(error)")
        }
    }
}

private struct GrantProblem: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension AccessPolicy.Grant {
    fileprivate init(_ entry: TOMLTable) throws(GrantProblem) {
        let principalKeys = ["user", "group", "uid", "gid"]
        if let unknown = entry.keys.first(where: { !principalKeys.contains($0) && $0 != "queues" && $0 != "roles" }) {
            throw GrantProblem("unknown key \"\(unknown)\" (a grant has one of user, group, uid, gid, then queues and roles)")
        }
        let given = principalKeys.filter { entry.contains(key: $0) }
        guard given.count == 1, let key = given.first else {
            throw GrantProblem("needs exactly one of user, group, uid or gid, not \(given.isEmpty ? "none" : given.joined(separator: " and "))")
        }
        let principal = try Self.principal(key, entry[key]!)
        let queues = try Self.strings("queues", entry["queues"])
        let roles = try Self.strings("roles", entry["roles"])
        var roleSet: Set<AccessPolicy.Role> = []
        for name in roles {
            guard let role = AccessPolicy.Role(rawValue: name) else {
                throw GrantProblem("unknown role \"\(name)\" (roles are produce, work, read and admin)")
            }
            roleSet.insert(role)
        }
        self.init(principal: principal, queues: queues.map(QueuePattern.init), roles: roleSet)
    }

    private static func strings(_ key: String, _ value: (any TOMLValueConvertible)?) throws(GrantProblem) -> [String] {
        guard let array = value?.array, !array.isEmpty else {
            throw GrantProblem("`\(key)` must be a non-empty array of strings")
        }
        var strings: [String] = []
        for element in array {
            guard let string = element.string, !string.isEmpty else {
                throw GrantProblem("`\(key)` must hold non-empty strings")
            }
            strings.append(string)
        }
        return strings
    }

    private static func principal(_ key: String, _ value: any TOMLValueConvertible) throws(GrantProblem) -> AccessPolicy.Principal {
        switch key {
        case "uid", "gid":
            guard let id = value.int, let id = UInt32(exactly: id) else {
                throw GrantProblem("`\(key)` must be a number from 0 to \(UInt32.max)")
            }
            return key == "uid" ? .user(uid: id) : .group(gid: id, members: UserDatabase.members(ofGroup: id))
        case "user":
            guard let name = value.string else { throw GrantProblem("`user` must be a user name") }
            guard let uid = UserDatabase.uid(ofUser: name) else { throw GrantProblem("no user \"\(name)\" on this host") }
            return .user(uid: uid)
        default:
            guard let name = value.string else { throw GrantProblem("`group` must be a group name") }
            guard let gid = UserDatabase.gid(ofGroup: name) else { throw GrantProblem("no group \"\(name)\" on this host") }
            return .group(gid: gid, members: UserDatabase.members(ofGroup: gid))
        }
    }
}

/// Lookups in the system's user and group database (`/etc/passwd`, `/etc/group`, or what
/// NSS is configured to ask), with the reentrant calls.
enum UserDatabase {
    private static let passwdWalk = NIOLock()

    static func uid(ofUser name: String) -> UInt32? {
        Self.withPasswd(name: name) { $0.pw_uid }
    }

    static func gid(ofGroup name: String) -> UInt32? {
        var group = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 1 << 16)
        guard getgrnam_r(name, &group, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return group.gr_gid
    }

    /// The uids of a group's listed members and of the users whose primary group it is.
    static func members(ofGroup gid: UInt32) -> Set<UInt32> {
        var members: Set<UInt32> = []
        var group = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 1 << 16)
        var names: [String] = []
        if getgrgid_r(gid, &group, &buffer, buffer.count, &result) == 0, result != nil, var member = group.gr_mem {
            while let name = member.pointee {
                names.append(String(cString: name))
                member += 1
            }
        }
        for name in names {
            if let uid = Self.uid(ofUser: name) { members.insert(uid) }
        }
        // Users whose primary group it is are not listed in it. getpwent walks one shared
        // cursor, hence the lock.
        Self.passwdWalk.withLock {
            setpwent()
            while let entry = getpwent() {
                if entry.pointee.pw_gid == gid { members.insert(entry.pointee.pw_uid) }
            }
            endpwent()
        }
        return members
    }

    private static func withPasswd<T>(name: String, _ body: (passwd) -> T) -> T? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 1 << 16)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return body(entry)
    }
}
