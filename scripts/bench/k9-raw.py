"""One GET of URL per iteration: k9's side of the raw race (scripts/bench/race.sh)."""

import k9
import k9.plan as p

plan = p.Plan([p.get(k9.env["URL"])])
