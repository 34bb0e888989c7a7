import Foundation

/// Evaluates a parsed template. It sees only the values passed in (no files, environment
/// or host objects) and stops with an error when a limit is reached, so a hostile
/// template cannot hang or exhaust memory.
final class TemplateInterpreter {
    struct Macro {
        let parameters: [(String, Expression?)]
        let body: [Statement]
    }

    enum Flow { case normal, breakLoop, continueLoop }

    let limits: ChatTemplate.Limits
    private var scopes: [[String: TemplateValue]]
    private var macros: [String: Macro] = [:]
    private var output = ""
    private var outputBytes = 0
    private var iterations = 0
    private var callDepth = 0

    init(globals: [String: TemplateValue], limits: ChatTemplate.Limits) {
        self.scopes = [globals]
        self.limits = limits
    }

    func render(_ body: [Statement]) throws -> String {
        _ = try run(body)
        return output
    }

    private func emit(_ s: String) throws {
        outputBytes += s.utf8.count
        guard outputBytes <= limits.maximumOutputBytes else {
            throw TemplateError("output exceeds the limit of \(limits.maximumOutputBytes) bytes")
        }
        output += s
    }

    private func checkSize(_ v: TemplateValue) throws -> TemplateValue {
        switch v {
        case .string(let s) where s.utf8.count > limits.maximumOutputBytes:
            throw TemplateError("a string exceeds the limit of \(limits.maximumOutputBytes) bytes")
        case .array(let a) where a.count > limits.maximumIterations:
            throw TemplateError("a list exceeds the limit of \(limits.maximumIterations) items")
        default: return v
        }
    }

    private func lookup(_ name: String) -> TemplateValue {
        for scope in scopes.reversed() { if let v = scope[name] { return v } }
        return .undefined
    }

    private func assign(_ name: String, _ value: TemplateValue) { scopes[scopes.count - 1][name] = value }

    private func run(_ body: [Statement]) throws -> Flow {
        for statement in body {
            switch statement {
            case .text(let t): try emit(t)
            case .output(let e): try emit(try eval(e).rendered)
            case .ifChain(let branches, let otherwise):
                var taken = false
                for (condition, block) in branches where try eval(condition).isTruthy {
                    taken = true
                    let flow = try run(block)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try run(otherwise)
                    if flow != .normal { return flow }
                }
            case .forLoop(let targets, let iterable, let condition, let block, let otherwise):
                try runLoop(targets: targets, iterable: iterable, condition: condition, body: block, otherwise: otherwise)
            case .set(let target, let attribute, let valueExpression):
                let value = try checkSize(try eval(valueExpression))
                if let attribute {
                    guard case .namespace(let ns) = lookup(target) else {
                        throw TemplateError("cannot set attribute '\(attribute)' on '\(target)', which is not a namespace")
                    }
                    ns.values[attribute] = value
                } else {
                    assign(target, value)
                }
            case .setBlock(let target, let block):
                let saved = output, savedBytes = outputBytes
                output = ""
                _ = try run(block)
                let captured = output
                output = saved
                outputBytes = savedBytes
                assign(target, .string(captured))
            case .macro(let name, let parameters, let block):
                macros[name] = Macro(parameters: parameters, body: block)
            case .breakLoop: return .breakLoop
            case .continueLoop: return .continueLoop
            }
        }
        return .normal
    }

    private func items(of value: TemplateValue) throws -> [TemplateValue] {
        switch value {
        case .array(let a): return a
        case .dict(let d): return d.map { .string($0.0) }
        case .string(let s): return s.map { .string(String($0)) }
        case .undefined, .none: return []
        default: throw TemplateError("cannot iterate over a \(value.typeName)")
        }
    }

    private func runLoop(targets: [String], iterable: Expression, condition: Expression?, body: [Statement], otherwise: [Statement]) throws {
        var elements = try items(of: try eval(iterable))
        func bind(_ element: TemplateValue) throws {
            if targets.count == 1 {
                assign(targets[0], element)
            } else {
                guard case .array(let parts) = element, parts.count == targets.count else {
                    throw TemplateError("cannot unpack a \(element.typeName) into \(targets.count) loop variables")
                }
                for (t, p) in zip(targets, parts) { assign(t, p) }
            }
        }
        if let condition {
            scopes.append([:])
            elements = try elements.filter { try bind($0); return try eval(condition).isTruthy }
            scopes.removeLast()
        }
        if elements.isEmpty {
            _ = try run(otherwise)
            return
        }
        for (index, element) in elements.enumerated() {
            iterations += 1
            guard iterations <= limits.maximumIterations else {
                throw TemplateError("loops ran more than \(limits.maximumIterations) iterations")
            }
            scopes.append([:])
            defer { scopes.removeLast() }
            try bind(element)
            let n = elements.count
            assign("loop", .dict([
                ("index", .int(index + 1)), ("index0", .int(index)), ("first", .bool(index == 0)), ("last", .bool(index == n - 1)),
                ("length", .int(n)), ("revindex", .int(n - index)), ("revindex0", .int(n - index - 1)),
                ("previtem", index > 0 ? elements[index - 1] : .undefined), ("nextitem", index + 1 < n ? elements[index + 1] : .undefined),
            ]))
            if try run(body) == .breakLoop { break }
        }
    }

    func eval(_ e: Expression) throws -> TemplateValue {
        switch e {
        case .literal(let v): return v
        case .name(let n): return lookup(n)
        case .list(let items): return .array(try items.map(eval))
        case .dict(let pairs):
            var out: [(String, TemplateValue)] = []
            for (k, v) in pairs {
                guard case .string(let key) = try eval(k) else { throw TemplateError("dictionary keys must be strings") }
                let value = try eval(v)
                if let i = out.firstIndex(where: { $0.0 == key }) { out[i].1 = value } else { out.append((key, value)) }
            }
            return .dict(out)
        case .attribute(let base, let name):
            let b = try eval(base)
            if case .undefined = b { throw TemplateError("cannot read attribute '\(name)' of an undefined value") }
            return b.member(name)
        case .index(let base, let index):
            return try subscriptValue(try eval(base), try eval(index))
        case .slice(let base, let start, let stop, let step):
            return try slice(try eval(base), try start.map(eval), try stop.map(eval), try step.map(eval))
        case .call(let callee, let args, let kwargs):
            return try call(callee, try args.map(eval), try kwargs.map { ($0.0, try eval($0.1)) })
        case .filter(let base, let name, let args, let kwargs):
            return try checkSize(try filter(name, try eval(base), try args.map(eval), try kwargs.map { ($0.0, try eval($0.1)) }))
        case .test(let base, let name, let args, let negated):
            let result = try test(name, try eval(base), try args.map(eval))
            return .bool(negated ? !result : result)
        case .unary(let op, let operand):
            let v = try eval(operand)
            if op == "not" { return .bool(!v.isTruthy) }
            switch v {
            case .int(let i): return .int(-i)
            case .double(let d): return .double(-d)
            default: throw TemplateError("cannot negate a \(v.typeName)")
            }
        case .binary(let op, let l, let r):
            if op == "and" { let a = try eval(l); return a.isTruthy ? try eval(r) : a }
            if op == "or" { let a = try eval(l); return a.isTruthy ? a : try eval(r) }
            return try checkSize(try binary(op, try eval(l), try eval(r)))
        case .conditional(let value, let condition, let otherwise):
            if try eval(condition).isTruthy { return try eval(value) }
            return try otherwise.map(eval) ?? .undefined
        }
    }

    private func subscriptValue(_ base: TemplateValue, _ index: TemplateValue) throws -> TemplateValue {
        switch (base, index) {
        case (.array(let a), .int(let i)):
            let j = i < 0 ? a.count + i : i
            return a.indices.contains(j) ? a[j] : .undefined
        case (.string(let s), .int(let i)):
            let chars = Array(s)
            let j = i < 0 ? chars.count + i : i
            return chars.indices.contains(j) ? .string(String(chars[j])) : .undefined
        case (.dict, .string(let k)), (.namespace, .string(let k)):
            return base.member(k)
        case (.undefined, _):
            throw TemplateError("cannot index an undefined value")
        default:
            return .undefined
        }
    }

    private func slice(_ base: TemplateValue, _ start: TemplateValue?, _ stop: TemplateValue?, _ step: TemplateValue?) throws -> TemplateValue {
        func int(_ v: TemplateValue?) throws -> Int? {
            switch v {
            case nil, .none?: return nil
            case .int(let i)?: return i
            default: throw TemplateError("slice bounds must be integers")
            }
        }
        let stepValue = try int(step) ?? 1
        guard stepValue != 0 else { throw TemplateError("slice step cannot be zero") }
        func pick<T>(_ items: [T]) throws -> [T] {
            let n = items.count
            func clamp(_ i: Int?, _ def: Int) -> Int {
                guard var i else { return def }
                if i < 0 { i += n }
                return stepValue > 0 ? min(max(i, 0), n) : min(max(i, -1), n - 1)
            }
            var i = clamp(try int(start), stepValue > 0 ? 0 : n - 1)
            let end = clamp(try int(stop), stepValue > 0 ? n : -1)
            var out: [T] = []
            while stepValue > 0 ? i < end : i > end { out.append(items[i]); i += stepValue }
            return out
        }
        switch base {
        case .array(let a): return .array(try pick(a))
        case .string(let s): return .string(String(try pick(Array(s))))
        default: throw TemplateError("cannot slice a \(base.typeName)")
        }
    }

    private func binary(_ op: String, _ a: TemplateValue, _ b: TemplateValue) throws -> TemplateValue {
        switch op {
        case "==": return .bool(a == b)
        case "!=": return .bool(a != b)
        case "<", ">", "<=", ">=":
            let ordering: Int
            if let x = a.number, let y = b.number { ordering = x < y ? -1 : x > y ? 1 : 0 }
            else if case .string(let x) = a, case .string(let y) = b { ordering = x < y ? -1 : x > y ? 1 : 0 }
            else { throw TemplateError("cannot compare a \(a.typeName) with a \(b.typeName)") }
            switch op {
            case "<": return .bool(ordering < 0)
            case ">": return .bool(ordering > 0)
            case "<=": return .bool(ordering <= 0)
            default: return .bool(ordering >= 0)
            }
        case "in":
            switch b {
            case .string(let s):
                guard case .string(let needle) = a else { throw TemplateError("'in <string>' needs a string on the left") }
                return .bool(s.contains(needle))
            case .array(let items): return .bool(items.contains(a))
            case .dict(let d):
                guard case .string(let k) = a else { return .bool(false) }
                return .bool(d.contains { $0.0 == k })
            case .undefined, .none: return .bool(false)
            default: throw TemplateError("cannot test membership in a \(b.typeName)")
            }
        case "~":
            return .string(a.rendered + b.rendered)
        case "+":
            switch (a, b) {
            case (.string(let x), .string(let y)): return .string(x + y)
            case (.array(let x), .array(let y)): return .array(x + y)
            case (.int(let x), .int(let y)):
                let (r, o) = x.addingReportingOverflow(y)
                if o { throw TemplateError("integer overflow") }
                return .int(r)
            default:
                if let x = a.number, let y = b.number { return .double(x + y) }
                throw TemplateError("cannot add a \(a.typeName) and a \(b.typeName)")
            }
        case "-", "*", "/", "//", "%":
            if op == "*" {
                if case .string(let s) = a, case .int(let n) = b { return try repeated(s, n) }
                if case .int(let n) = a, case .string(let s) = b { return try repeated(s, n) }
            }
            if case .int(let x) = a, case .int(let y) = b, op != "/" {
                switch op {
                case "-": let (r, o) = x.subtractingReportingOverflow(y); if o { throw TemplateError("integer overflow") }; return .int(r)
                case "*": let (r, o) = x.multipliedReportingOverflow(by: y); if o { throw TemplateError("integer overflow") }; return .int(r)
                default:
                    guard y != 0 else { throw TemplateError("division by zero") }
                    let q = Int((Double(x) / Double(y)).rounded(.down))
                    return op == "//" ? .int(q) : .int(x - q * y)
                }
            }
            guard let x = a.number, let y = b.number else { throw TemplateError("cannot apply '\(op)' to a \(a.typeName) and a \(b.typeName)") }
            switch op {
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            default:
                guard y != 0 else { throw TemplateError("division by zero") }
                if op == "/" { return .double(x / y) }
                if op == "//" { return .double((x / y).rounded(.down)) }
                return .double(x - (x / y).rounded(.down) * y)
            }
        default:
            throw TemplateError("unsupported operator '\(op)'")
        }
    }

    private func repeated(_ s: String, _ n: Int) throws -> TemplateValue {
        guard n > 0 else { return .string("") }
        let (bytes, overflow) = s.utf8.count.multipliedReportingOverflow(by: n)
        guard !overflow, bytes <= limits.maximumOutputBytes else {
            throw TemplateError("a string exceeds the limit of \(limits.maximumOutputBytes) bytes")
        }
        return .string(String(repeating: s, count: n))
    }

    private func call(_ callee: Expression, _ args: [TemplateValue], _ kwargs: [(String, TemplateValue)]) throws -> TemplateValue {
        if case .attribute(let base, let method) = callee {
            return try checkSize(try callMethod(try eval(base), method, args))
        }
        guard case .name(let name) = callee else { throw TemplateError("only named functions and methods can be called") }
        switch name {
        case "raise_exception":
            throw TemplateError("raise_exception: \(args.first?.rendered ?? "")")
        case "range":
            let ints = try args.map { v -> Int in
                guard case .int(let i) = v else { throw TemplateError("range() takes integers") }
                return i
            }
            let (lo, hi, step): (Int, Int, Int) = ints.count == 1 ? (0, ints[0], 1) : ints.count == 2 ? (ints[0], ints[1], 1) : ints.count == 3 ? (ints[0], ints[1], ints[2]) : (0, 0, 0)
            guard step != 0 else { throw TemplateError("range() needs one to three integers and a non-zero step") }
            let count = step > 0 ? max(0, (hi - lo + step - 1) / step) : max(0, (lo - hi - step - 1) / -step)
            guard count <= limits.maximumIterations else { throw TemplateError("range() of \(count) items exceeds the limit of \(limits.maximumIterations)") }
            return .array(stride(from: lo, to: hi, by: step).map { .int($0) })
        case "namespace":
            var values: [String: TemplateValue] = [:]
            if case .dict(let d)? = args.first { for (k, v) in d { values[k] = v } }
            for (k, v) in kwargs { values[k] = v }
            return .namespace(Namespace(values))
        case "dict":
            return .dict(kwargs)
        case "strftime_now":
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            let format = args.first?.rendered ?? ""
            formatter.dateFormat = format.replacingOccurrences(of: "%d", with: "dd").replacingOccurrences(of: "%B", with: "MMMM")
                .replacingOccurrences(of: "%b", with: "MMM").replacingOccurrences(of: "%Y", with: "yyyy").replacingOccurrences(of: "%m", with: "MM")
            return .string(formatter.string(from: Date()))
        default:
            guard let macro = macros[name] else { throw TemplateError("unknown function '\(name)'") }
            callDepth += 1
            defer { callDepth -= 1 }
            guard callDepth <= limits.maximumCallDepth else { throw TemplateError("macro calls nested deeper than \(limits.maximumCallDepth)") }
            var scope: [String: TemplateValue] = [:]
            for (i, (p, def)) in macro.parameters.enumerated() {
                if let kw = kwargs.first(where: { $0.0 == p }) { scope[p] = kw.1 }
                else if i < args.count { scope[p] = args[i] }
                else { scope[p] = try def.map(eval) ?? .undefined }
            }
            let saved = output, savedBytes = outputBytes
            output = ""
            scopes.append(scope)
            defer { scopes.removeLast() }
            _ = try run(macro.body)
            let result = output
            output = saved
            outputBytes = savedBytes
            return .string(result)
        }
    }

    private func callMethod(_ base: TemplateValue, _ method: String, _ args: [TemplateValue]) throws -> TemplateValue {
        func stringArg(_ i: Int) throws -> String {
            guard i < args.count, case .string(let s) = args[i] else { throw TemplateError("\(method)() expects a string argument") }
            return s
        }
        switch (base, method) {
        case (.string(let s), "strip"): return .string(args.isEmpty ? s.trimmingCharacters(in: .whitespacesAndNewlines) : s.trimmingCharacters(in: CharacterSet(charactersIn: try stringArg(0))))
        case (.string(let s), "lstrip"): return .string(String(s.drop { $0.isWhitespace }))
        case (.string(let s), "rstrip"): return .string(String(s.reversed().drop { $0.isWhitespace }.reversed()))
        case (.string(let s), "upper"): return .string(s.uppercased())
        case (.string(let s), "lower"): return .string(s.lowercased())
        case (.string(let s), "title"): return .string(s.capitalized)
        case (.string(let s), "capitalize"): return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case (.string(let s), "startswith"): return .bool(s.hasPrefix(try stringArg(0)))
        case (.string(let s), "endswith"): return .bool(s.hasSuffix(try stringArg(0)))
        case (.string(let s), "split"):
            if args.isEmpty { return .array(s.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) }) }
            return .array(s.components(separatedBy: try stringArg(0)).map { .string($0) })
        case (.string(let s), "replace"): return .string(s.replacingOccurrences(of: try stringArg(0), with: try stringArg(1)))
        case (.dict(let d), "items"): return .array(d.map { .array([.string($0.0), $0.1]) })
        case (.dict(let d), "keys"): return .array(d.map { .string($0.0) })
        case (.dict(let d), "values"): return .array(d.map { $0.1 })
        case (.dict, "get"):
            let v = base.member(try stringArg(0))
            if case .undefined = v { return args.count > 1 ? args[1] : .none }
            return v
        default: throw TemplateError("unsupported method '\(method)' on a \(base.typeName)")
        }
    }

    private func filter(_ name: String, _ v: TemplateValue, _ args: [TemplateValue], _ kwargs: [(String, TemplateValue)]) throws -> TemplateValue {
        switch name {
        case "trim": return .string(v.rendered.trimmingCharacters(in: .whitespacesAndNewlines))
        case "length", "count":
            switch v {
            case .string(let s): return .int(s.count)
            case .array(let a): return .int(a.count)
            case .dict(let d): return .int(d.count)
            case .undefined: return .int(0)
            default: throw TemplateError("filter 'length' does not apply to a \(v.typeName)")
            }
        case "tojson":
            var indent: Int? = nil
            if case .int(let i)? = kwargs.first(where: { $0.0 == "indent" })?.1 ?? args.first { indent = i }
            return .string(v.json(indent: indent))
        case "upper": return .string(v.rendered.uppercased())
        case "lower": return .string(v.rendered.lowercased())
        case "capitalize": return .string(v.rendered.prefix(1).uppercased() + v.rendered.dropFirst().lowercased())
        case "title": return .string(v.rendered.capitalized)
        case "string": return .string(v.rendered)
        case "int":
            switch v {
            case .int: return v
            case .double(let d): return .int(Int(d))
            case .string(let s): return .int(Int(s.trimmingCharacters(in: .whitespaces)) ?? 0)
            case .bool(let b): return .int(b ? 1 : 0)
            default: return .int(0)
            }
        case "default", "d":
            let boolean = args.count > 1 && args[1].isTruthy
            if case .undefined = v { return args.first ?? .string("") }
            if boolean, !v.isTruthy { return args.first ?? .string("") }
            return v
        case "first": return try items(of: v).first ?? .undefined
        case "last": return try items(of: v).last ?? .undefined
        case "list": return .array(try items(of: v))
        case "join":
            let sep = args.first?.rendered ?? ""
            return .string(try items(of: v).map(\.rendered).joined(separator: sep))
        case "replace":
            guard args.count >= 2 else { throw TemplateError("filter 'replace' needs two arguments") }
            return .string(v.rendered.replacingOccurrences(of: args[0].rendered, with: args[1].rendered))
        case "items":
            guard case .dict(let d) = v else { throw TemplateError("filter 'items' needs a dict") }
            return .array(d.map { .array([.string($0.0), $0.1]) })
        case "safe": return v
        case "map":
            guard case .string(let attribute)? = kwargs.first(where: { $0.0 == "attribute" })?.1 else {
                throw TemplateError("filter 'map' is supported only as map(attribute=...)")
            }
            return .array(try items(of: v).map { $0.member(attribute) })
        case "selectattr", "rejectattr":
            guard case .string(let attribute)? = args.first else { throw TemplateError("filter '\(name)' needs an attribute name") }
            let testName = args.count > 1 ? args[1].rendered : "truthy"
            let selected = try items(of: v).filter { item in
                let member = item.member(attribute)
                let passed = testName == "truthy" ? member.isTruthy : try test(testName, member, Array(args.dropFirst(2)))
                return name == "selectattr" ? passed : !passed
            }
            return .array(selected)
        default:
            throw TemplateError("unsupported filter '\(name)'")
        }
    }

    private func test(_ name: String, _ v: TemplateValue, _ args: [TemplateValue]) throws -> Bool {
        switch name {
        case "defined": if case .undefined = v { return false } else { return true }
        case "undefined": if case .undefined = v { return true } else { return false }
        case "none": if case .none = v { return true } else { return false }
        case "string": if case .string = v { return true } else { return false }
        case "number": if case .int = v { return true }; if case .double = v { return true }; return false
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "boolean": if case .bool = v { return true } else { return false }
        case "mapping": if case .dict = v { return true } else { return false }
        case "sequence", "iterable":
            switch v {
            case .array, .string, .dict: return true
            default: return false
            }
        case "true": return v == .bool(true)
        case "false": return v == .bool(false)
        case "odd", "even":
            guard case .int(let i) = v else { throw TemplateError("test '\(name)' needs an integer") }
            return (i % 2 != 0) == (name == "odd")
        case "equalto", "eq", "==":
            guard let other = args.first else { throw TemplateError("test '\(name)' needs an argument") }
            return v == other
        case "ne", "!=": return v != args.first
        case "in":
            guard let other = args.first else { throw TemplateError("test 'in' needs an argument") }
            return try binary("in", v, other).isTruthy
        default: throw TemplateError("unsupported test '\(name)'")
        }
    }
}
