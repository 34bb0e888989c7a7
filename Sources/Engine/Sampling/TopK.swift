/// The indices of the `k` largest values, largest first (ties: lower index first), found
/// with a bounded min-heap instead of sorting everything: sampling and scoring look at a
/// few dozen of a vocabulary of tens of thousands.
enum TopK {
    static func indices<C: RandomAccessCollection>(of values: C, k: Int) -> [Int] where C.Element == Float, C.Index == Int {
        let k = min(k, values.count)
        guard k > 0 else { return [] }
        // `worse(a, b)`: a ranks below b in the final order.
        func worse(_ a: Int, _ b: Int) -> Bool {
            let x = values[a], y = values[b]
            return x != y ? x < y : a > b
        }
        var heap: [Int] = []  // the k best so far; heap[0] is the worst of them
        heap.reserveCapacity(k)
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count, worse(heap[l], heap[m]) { m = l }
                if r < heap.count, worse(heap[r], heap[m]) { m = r }
                if m == i { return }
                heap.swapAt(i, m)
                i = m
            }
        }
        for index in values.indices {
            if heap.count < k {
                heap.append(index)
                var i = heap.count - 1
                while i > 0, worse(heap[i], heap[(i - 1) / 2]) {
                    heap.swapAt(i, (i - 1) / 2)
                    i = (i - 1) / 2
                }
            } else if worse(heap[0], index) {
                heap[0] = index
                siftDown(0)
            }
        }
        return heap.sorted { worse($1, $0) }
    }
}
