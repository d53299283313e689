"""Parse OpenMetrics text from stdin with prometheus_client's reference parser and print the
families as JSON. The parser is strict (a missing `# EOF`, a bad escape, a unit that does not
match the name, metadata after samples are errors): a malformed exposition exits 1 with the
parser's message on stderr. Used by lab-report's tests/openmetrics.rs."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = [
            {
                "name": f.name,
                "type": f.type,
                "unit": f.unit,
                "help": f.documentation,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in f.samples
                ],
            }
            for f in text_string_to_metric_families(text)
        ]
    except ValueError as e:
        print(f"malformed OpenMetrics: {e}", file=sys.stderr)
        return 1
    json.dump(families, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
