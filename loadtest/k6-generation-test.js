// The users' k6 generation test (shared/scenario.md), as k6 runs it against
// the real backend or the mock. The mock-api k6 compatibility test runs this
// file with short options (`--vus 3 --duration 4s -e THINK_MAX_S=0.2`).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate, Trend, Counter } from 'k6/metrics';

const API_BASE = __ENV.API_BASE || 'http://localhost:5001';
const TEST_EMAIL = __ENV.TEST_EMAIL || 'test@example.com';
const TEST_PASSWORD = __ENV.TEST_PASSWORD || 'testpassword123';
const THINK_MIN_S = parseFloat(__ENV.THINK_MIN_S || '1');
const THINK_MAX_S = parseFloat(__ENV.THINK_MAX_S || '3');

const errors = new Rate('errors');
const responseTime = new Trend('response_time');
const generationSuccess = new Rate('generation_success');
const creditErrors = new Counter('credit_errors');
const providerErrors = new Counter('provider_errors');

export const options = {
  stages: [
    { duration: '10s', target: 5 },
    { duration: '20s', target: 10 },
    { duration: '30s', target: 10 },
    { duration: '10s', target: 0 },
  ],
  thresholds: {
    errors: ['rate<0.10'],
    response_time: ['p(95)<30000'],
    generation_success: ['rate>0.80'],
    http_req_failed: ['rate<0.10'],
    http_req_duration: ['p(99)<60000'],
  },
};

const PROMPTS = [
  'A scenic landscape at sunset',
  'A futuristic city skyline',
  'A peaceful forest scene',
  'An abstract geometric pattern',
  'A cute cat playing with yarn',
  'A modern minimalist interior',
  'A vibrant street art mural',
  'A serene ocean beach',
];

function login() {
  const res = http.post(
    `${API_BASE}/api/auth/login`,
    JSON.stringify({ email: TEST_EMAIL, password: TEST_PASSWORD }),
    { headers: { 'Content-Type': 'application/json' }, timeout: '10s' },
  );
  const ok = check(res, {
    'login successful': (r) => r.status === 200,
    'login returned token': (r) => r.json('token') !== undefined,
  });
  return ok ? res.json('token') : null;
}

export function setup() {
  const token = login();
  if (!token) {
    throw new Error('could not obtain auth token');
  }
  return { token };
}

export default function () {
  const token = login();
  if (!token) {
    errors.add(1);
    return;
  }
  const prompt = PROMPTS[Math.floor(Math.random() * PROMPTS.length)];
  const start = Date.now();
  const res = http.post(
    `${API_BASE}/api/images/seedream4/generate`,
    JSON.stringify({ prompt, model: 'seedream-4-0-t2i-250415', outputs: 1 }),
    {
      headers: { 'Content-Type': 'application/json', Cookie: `token=${token}` },
      timeout: '60s',
      tags: { endpoint: 'seedream4' },
    },
  );
  responseTime.add(Date.now() - start);
  const ok = check(res, {
    'status is 202': (r) => r.status === 202,
    'has session_id': (r) => r.json('session_id') !== undefined,
    'has client_key': (r) => r.json('clientKey') !== undefined,
  });
  if (ok) {
    generationSuccess.add(1);
    errors.add(0);
  } else {
    errors.add(1);
    generationSuccess.add(0);
    let message = '';
    try { message = String(res.json('error') || ''); } catch (e) { message = ''; }
    if ((res.status === 402 || res.status === 400) && message.toLowerCase().includes('credit')) {
      creditErrors.add(1);
    } else if (res.status >= 500) {
      providerErrors.add(1);
    }
  }
  sleep(THINK_MIN_S + Math.random() * (THINK_MAX_S - THINK_MIN_S));
}
