"""The generation iteration as a k9 declarative plan, for the efficiency
benchmark: one generate with the login cookie (TOKEN, from one login
before the run), the k6 test's checks, no think time."""

import k9
import k9.plan as p

API_BASE = k9.env["API_BASE"]
TOKEN = k9.env["TOKEN"]

plan = p.Plan(
    [
        p.post(
            f"{API_BASE}/api/images/seedream4/generate",
            headers={"Cookie": f"token={TOKEN}"},
            json={"prompt": "a lighthouse at dusk", "model": "seedream-4-0-t2i-250415", "outputs": 1},
            checks={
                "status is 202": p.status(202),
                "has session_id": p.body_contains("session_id"),
                "has client_key": p.body_contains("clientKey"),
            },
        ),
    ],
)
