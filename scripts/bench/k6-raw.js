// One GET of URL per iteration: k6's side of the raw race (scripts/bench/race.sh).
import http from 'k6/http';

export default function () {
  http.get(__ENV.URL);
}
