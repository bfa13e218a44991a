// The generation test's iteration for efficiency benchmarks: log in once
// per VU (setup), then per iteration one generate with the cookie, the
// k6 test's checks and custom metrics, no think time. loadgen's equivalent
// is `run --login once --think-time 0`.
import http from 'k6/http';
import { check } from 'k6';
import { Rate, Trend, Counter } from 'k6/metrics';

const API_BASE = __ENV.API_BASE;
const errors = new Rate('errors');
const generationSuccess = new Rate('generation_success');
const responseTime = new Trend('response_time');
const creditErrors = new Counter('credit_errors');
const providerErrors = new Counter('provider_errors');
const prompts = ['a lighthouse at dusk', 'a red fox in snow', 'a city of glass'];

export function setup() {
  const r = http.post(`${API_BASE}/api/auth/login`,
    JSON.stringify({ email: 'test@example.com', password: 'testpassword123' }),
    { headers: { 'Content-Type': 'application/json' } });
  return { token: r.json('token') };
}

export default function (data) {
  const prompt = prompts[Math.floor(Math.random() * prompts.length)];
  const r = http.post(`${API_BASE}/api/images/seedream4/generate`,
    JSON.stringify({ prompt, model: 'seedream-4-0-t2i-250415', outputs: 1 }),
    { headers: { 'Content-Type': 'application/json', Cookie: `token=${data.token}` } });
  responseTime.add(r.timings.duration);
  const ok = check(r, {
    'status is 202': (res) => res.status === 202,
    'has session_id': (res) => !!res.json('session_id'),
    'has client_key': (res) => !!res.json('clientKey'),
  });
  errors.add(!ok);
  generationSuccess.add(r.status === 202);
  if (r.status === 402) creditErrors.add(1);
  if (r.status >= 500) providerErrors.add(1);
}
