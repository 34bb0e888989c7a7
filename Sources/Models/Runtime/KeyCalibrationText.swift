/// The text a cache of quantized keys fits its key transforms on at load (`KeyTransform`):
/// our own words, mixed as what people run through these models is mixed (prose, a recipe, a
/// question and answer, Python, Swift, SQL, JSON, notes), so that no one kind of text sets
/// the channels' means. Only its first `ModelRuntime.calibrationPositions` tokens are used.
let keyCalibrationText = #"""
The library opens at nine on weekdays and at ten on Saturdays. Visitors who want to read the older maps should ask at the front desk, where a member of staff will bring them to the reading room on the second floor. Bags and coats go in the lockers by the stairs; pencils are allowed, pens are not.

In 1887 the town council voted to build a bridge across the river, but the money ran out twice before the stone arches were finished. When it finally opened, nearly four thousand people walked across it on the first day, and the ferry that had carried them for sixty years stopped running a month later.

To make the bread, mix 500 g of flour with 10 g of salt and 7 g of dried yeast, then add 320 ml of warm water. Knead for ten minutes until the dough is smooth, cover it, and leave it to rise for an hour. Shape it, let it rise again, and bake at 220 °C for about thirty minutes.

Q: Why does the sky look blue?
A: Sunlight is scattered by the molecules of the air, and shorter wavelengths are scattered much more than longer ones, so blue light reaches our eyes from every direction of the sky.

def merge_sorted(a, b):
    """Merge two sorted lists into one sorted list."""
    result = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            result.append(a[i])
            i += 1
        else:
            result.append(b[j])
            j += 1
    result.extend(a[i:])
    result.extend(b[j:])
    return result

struct Point: Equatable {
    var x: Double
    var y: Double

    func distance(to other: Point) -> Double {
        ((x - other.x) * (x - other.x) + (y - other.y) * (y - other.y)).squareRoot()
    }
}

SELECT name, COUNT(*) AS orders FROM customers JOIN orders ON orders.customer_id = customers.id GROUP BY name ORDER BY orders DESC LIMIT 10;

{"id": 42, "name": "sensor-7", "readings": [12.5, 13.1, 12.9], "active": true}

Meeting notes, Tuesday: the release moves to next Friday because two tests still fail on the older build machines. Maria will look at the memory error, Tom will update the documentation, and everyone should review the open pull requests before Thursday.
"""#
