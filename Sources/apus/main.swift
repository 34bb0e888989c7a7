import GGUF
import Models
import Kernels
import Foundation
let file = try GGUFFile(path: CommandLine.arguments[1])
let lines = try String(contentsOfFile: "/work/shared/goldens/smollm2-135m-instruct-q4_1/greedy.jsonl", encoding: .utf8).split(separator: "\n")
for prec in [ActivationPrecision.int8, .fp32] {
  let model = try ModelRegistry.load(file, options: ModelOptions(precision: prec))
  var agree = 0, total = 0, confidentMiss = 0, sumdiff = 0.0
  let t0 = Date()
  for line in lines {
    let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
    let p = obj["prompt_ids"] as! [Int], c = obj["completion_ids"] as! [Int]
    let top = obj["top_logprobs"] as! [[[String: Any]]]
    let cache = model.makeCache(capacity: 1024)
    let all = p + c
    let logits = try model.forward(all, cache: cache, logitRows: (p.count - 1)..<(all.count - 1))
    let V = model.vocabularySize
    for i in 0..<c.count {
      let row = Array(logits[(i*V)..<((i+1)*V)])
      let best = row.indices.max { row[$0] < row[$1] }!
      let ref = top[i][0]["id"] as! Int
      let lead = (top[i][0]["logprob"] as! Double) - (top[i][1]["logprob"] as! Double)
      let m = row.max()!; let lse = log(row.map { exp(Double($0 - m)) }.reduce(0, +)) + Double(m)
      sumdiff += abs(Double(row[ref]) - lse - (top[i][0]["logprob"] as! Double))
      total += 1; if best == ref { agree += 1 } else if lead >= 0.5 { confidentMiss += 1 }
    }
  }
  print(prec, "agree \(agree)/\(total)", "confident misses \(confidentMiss)", "mean |dlogp| \(sumdiff/Double(total))", Date().timeIntervalSince(t0))
}
