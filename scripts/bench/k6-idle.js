// One generate per VU, then think: for measuring memory per idle VU.
import http from 'k6/http';
import { sleep } from 'k6';

export function setup() {
  const r = http.post(`${__ENV.API_BASE}/api/auth/login`,
    JSON.stringify({ email: 'test@example.com', password: 'testpassword123' }),
    { headers: { 'Content-Type': 'application/json' } });
  return { token: r.json('token') };
}

export default function (data) {
  http.post(`${__ENV.API_BASE}/api/images/seedream4/generate`,
    JSON.stringify({ prompt: 'idle', outputs: 1 }),
    { headers: { 'Content-Type': 'application/json', Cookie: `token=${data.token}` } });
  sleep(60);
}
