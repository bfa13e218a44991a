//! `/openapi.json`: an OpenAPI 3.0 description of every route, request,
//! response and error body, exact enough to drive a fuzzer. Kept next to
//! the routes and checked against the router by the contract tests.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn text_response(description: &str, values: &[&str]) -> Value {
    json!({"description": description, "content": {"text/plain": {"schema": {"type": "string", "enum": values}}}})
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// Errors every JSON route may answer besides its own.
/// The 503 of every route that reads the database while it is down.
const DATABASE_UNAVAILABLE: &str = "database temporarily unavailable, please retry";

fn with_common_errors(mut responses: Value, authenticated: bool) -> Value {
    let map = responses.as_object_mut().expect("responses is an object");
    map.insert(
        "400".into(),
        error_response("Missing field, malformed JSON or wrong content type"),
    );
    map.insert("413".into(), error_response("Body larger than 64 KiB"));
    if authenticated {
        map.insert(
            "401".into(),
            error_response("No token, authorization denied | Token is not valid"),
        );
    }
    map.insert("500".into(), error_response("Server error"));
    map.entry("503")
        .or_insert_with(|| error_response(DATABASE_UNAVAILABLE));
    responses
}

pub fn document() -> Value {
    let user = object(
        &["id", "email", "credits"],
        json!({"id": {"type": "string", "format": "uuid"}, "email": {"type": "string"}, "credits": {"type": "integer"}}),
    );
    // What the handlers validate: non-blank strings (`\S`), and for a new
    // account an e-mail with an `@`.
    let non_blank = json!({"type": "string", "pattern": "\\S"});
    let credentials = object(
        &["email", "password"],
        json!({"email": non_blank, "password": non_blank}),
    );
    let registration = object(
        &["email", "password"],
        json!({"email": {"type": "string", "pattern": "^[^\\s@]+@[^\\s@]+$"}, "password": non_blank}),
    );
    let cookie = json!({"Set-Cookie": {"schema": {"type": "string"}, "description": "token=<jwt>; Max-Age=604800; Path=/; Expires=<now + 7 days, HTTP date>; HttpOnly; SameSite=Lax"}});
    let nullable = |t: &str| json!({"type": t, "nullable": true});
    let history_item = object(
        &[
            "session_id",
            "prompt",
            "model",
            "status",
            "created_at",
            "completed_at",
            "outputs",
            "aspect_ratio",
            "resolution",
            "guidance_scale",
            "credit_cost",
            "error_details",
            "ref_image_url",
            "ref_image_urls",
            "input_settings",
            "client_key",
            "url",
            "b2_url",
            "image_client_key",
            "image_created_at",
            "image_completed_at",
        ],
        json!({
            "session_id": {"type": "string", "format": "uuid"},
            "prompt": {"type": "string"},
            "model": nullable("string"),
            "status": {"type": "string", "enum": ["processing", "completed", "failed"]},
            "created_at": {"type": "string", "format": "date-time"},
            "completed_at": {"type": "string", "format": "date-time", "nullable": true},
            "outputs": {"type": "integer"},
            "aspect_ratio": nullable("string"),
            "resolution": nullable("string"),
            "guidance_scale": nullable("number"),
            "credit_cost": {"type": "integer"},
            "error_details": {"type": "object", "nullable": true},
            "ref_image_url": nullable("string"),
            "ref_image_urls": {"type": "array", "items": {"type": "string"}},
            "input_settings": {"type": "object"},
            "client_key": nullable("string"),
            "url": nullable("string"),
            "b2_url": nullable("string"),
            "image_client_key": nullable("string"),
            "image_created_at": {"type": "string", "format": "date-time", "nullable": true},
            "image_completed_at": {"type": "string", "format": "date-time", "nullable": true},
        }),
    );
    let generate_body = object(
        &["prompt"],
        json!({
            "prompt": non_blank,
            "model": {"type": "string", "default": "seedream-4-0-250828"},
            "outputs": {"type": "integer", "minimum": 1, "maximum": 15, "default": 1, "description": "maximum is MAX_OUTPUTS"},
            "size": {"type": "string", "default": "1024x1024"},
            "guidance_scale": {"type": "number"},
            "negative_prompt": {"type": "string"},
            "seed": {"type": "integer"},
            "watermark": {"type": "boolean"},
            "aspect_ratio": {"type": "string"},
            "clientKey": {"type": "string", "maxLength": 200, "description": "idempotency key per user; a UUID is made when absent"},
        }),
    );
    let accepted = object(
        &[
            "accepted",
            "clientKey",
            "reservationId",
            "sessionId",
            "session_id",
            "status",
        ],
        json!({
            "accepted": {"type": "boolean", "enum": [true]},
            "clientKey": {"type": "string"},
            "reservationId": {"type": "string", "format": "uuid"},
            "sessionId": {"type": "string", "format": "uuid"},
            "session_id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": ["queued"]},
        }),
    );
    let direct = object(
        &[
            "success",
            "sessionId",
            "clientKey",
            "creditsUsed",
            "creditsLeft",
            "status",
        ],
        json!({
            "success": {"type": "boolean", "enum": [true]},
            "sessionId": {"type": "string", "format": "uuid"},
            "clientKey": {"type": "string"},
            "creditsUsed": {"type": "integer"},
            "creditsLeft": {"type": "integer"},
            "status": {"type": "string", "enum": ["processing"]},
        }),
    );
    let image = object(
        &[
            "id",
            "url",
            "width",
            "height",
            "storage_provider",
            "created_at",
        ],
        json!({
            "id": {"type": "string", "format": "uuid"}, "url": nullable("string"), "width": nullable("integer"),
            "height": nullable("integer"), "storage_provider": nullable("string"),
            "created_at": {"type": "string", "format": "date-time"},
        }),
    );
    let session = object(
        &[
            "id",
            "session_id",
            "status",
            "prompt",
            "model",
            "outputs",
            "credit_cost",
            "reservation_id",
            "client_key",
            "error_details",
            "created_at",
            "completed_at",
            "duration_ms",
            "images",
        ],
        json!({
            "id": {"type": "string", "format": "uuid"},
            "session_id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": ["processing", "completed", "failed"]},
            "prompt": {"type": "string"}, "model": nullable("string"), "outputs": {"type": "integer"},
            "credit_cost": {"type": "integer"}, "reservation_id": {"type": "string", "format": "uuid", "nullable": true},
            "client_key": nullable("string"), "error_details": {"type": "object", "nullable": true},
            "created_at": {"type": "string", "format": "date-time"},
            "completed_at": {"type": "string", "format": "date-time", "nullable": true},
            "duration_ms": nullable("integer"),
            "images": {"type": "array", "items": reference("Image")},
        }),
    );
    let page_params = json!([
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100, "default": 10}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": i32::MAX, "default": 0}},
    ]);
    let id_param = |name: &str| json!([{"name": name, "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}]);
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Cooly backend (mock-api)", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {
                "cookie": {"type": "apiKey", "in": "cookie", "name": "token"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": {
                "Error": object(&["error"], json!({"error": {"type": "string"}})),
                "User": user,
                "Credentials": credentials,
                "Registration": registration,
                "GenerateRequest": generate_body,
                "Accepted": accepted,
                "DirectAccepted": direct,
                "HistoryItem": history_item,
                "Image": image,
                "Session": session,
            },
        },
        "paths": {
            "/api/auth/login": {"post": {
                "requestBody": json_body(reference("Credentials")),
                "responses": with_common_errors(json!({
                    "200": {"description": "Logged in", "headers": cookie,
                            "content": {"application/json": {"schema": {"allOf": [reference("User"), object(&["token"], json!({"token": {"type": "string"}}))]}}}},
                    "401": error_response("Invalid credentials (unknown user, wrong password, or no email)"),
                }), false),
            }},
            "/api/auth/register": {"post": {
                "requestBody": json_body(reference("Registration")),
                "responses": with_common_errors(json!({
                    "200": {"description": "Registered with 10 credits", "headers": cookie,
                            "content": {"application/json": {"schema": reference("User")}}},
                }), false),
            }},
            "/api/auth/me": {"get": {
                "security": [{"cookie": []}, {"bearer": []}],
                "responses": {
                    "200": json_response("The current user", reference("User")),
                    "401": error_response("Not authenticated | Invalid token"),
                    "404": error_response("User not found"),
                },
            }},
            "/api/auth/logout": {"post": {
                "responses": {"200": {"description": "Cookie cleared", "headers": {"Set-Cookie": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": object(&["message"], json!({"message": {"type": "string"}}))}}}},
            }},
            "/api/user/credits": {"get": {
                "security": [{"cookie": []}, {"bearer": []}],
                "responses": {
                    "200": json_response("Credits", object(&["credits", "available", "reserved"], json!({
                        "credits": {"type": "integer"}, "available": {"type": "integer"}, "reserved": {"type": "integer"}}))),
                    "401": error_response("No token, authorization denied | Token is not valid"),
                    "404": error_response("User not found"),
                },
            }},
            "/api/images/seedream4/generate": {"post": {
                "security": [{"cookie": []}, {"bearer": []}],
                "requestBody": json_body(reference("GenerateRequest")),
                "responses": with_common_errors(json!({
                    "202": json_response("Accepted and queued (enqueue-first)", reference("Accepted")),
                    "200": json_response("Accepted on the direct path (ENABLE_ENQUEUE_FIRST=false)", reference("DirectAccepted")),
                    "402": error_response("Insufficient credits"),
                    "404": error_response("User not found"),
                    "503": error_response(&format!("queue temporarily unavailable, please retry | {DATABASE_UNAVAILABLE} | the provider's 503 on the direct path")),
                    "502": error_response("The provider's failure on the direct path (injected faults)"),
                    "504": error_response("The provider timed out on the direct path (injected faults)"),
                }), true),
            }},
            "/api/images/seedream4/history": {"get": {
                "security": [{"cookie": []}, {"bearer": []}],
                "parameters": page_params,
                "responses": {
                    "200": json_response("One item per image, newest session first", object(&["items", "pagination"], json!({
                        "items": {"type": "array", "items": reference("HistoryItem")},
                        "pagination": object(&["total", "limit", "offset", "hasMore"], json!({
                            "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}, "hasMore": {"type": "boolean"}})),
                    }))),
                    "400": error_response("limit or offset out of range, repeated or not UTF-8"),
                    "401": error_response("No token, authorization denied | Token is not valid"),
                },
            }},
            "/api/images/seedream4/sessions/{id}": {"get": {
                "security": [{"cookie": []}, {"bearer": []}],
                "parameters": id_param("id"),
                "responses": {
                    "200": json_response("The session and its images", reference("Session")),
                    "400": error_response("The id is not UTF-8"),
                    "401": error_response("No token, authorization denied | Token is not valid"),
                    "404": error_response("Session not found"),
                },
            }},
            "/api/admin/login": {"post": {
                "requestBody": json_body(reference("Credentials")),
                "responses": with_common_errors(json!({
                    "200": json_response("Admin token", object(&["token", "admin"], json!({
                        "token": {"type": "string"},
                        "admin": object(&["id", "email", "role"], json!({"id": {"type": "string", "format": "uuid"}, "email": {"type": "string"}, "role": {"type": "string", "enum": ["admin"]}})),
                    }))),
                    "401": error_response("Invalid credentials (always, when ADMIN_EMAIL/ADMIN_PASSWORD are unset)"),
                }), false),
            }},
            "/api/admin/users/{id}/credits": {"post": {
                "security": [{"bearer": []}],
                "parameters": id_param("id"),
                "requestBody": json_body(object(&["amount"], json!({"amount": {"type": "integer", "minimum": 1, "maximum": i32::MAX}, "reason": {"type": "string"}}))),
                "responses": with_common_errors(json!({
                    "200": json_response("Credits added as a one_off lot", object(&["success", "newCredits"], json!({
                        "success": {"type": "boolean", "enum": [true]}, "newCredits": {"type": "integer"}}))),
                    "403": error_response("Admin access required"),
                    "404": error_response("User not found"),
                }), true),
            }},
            "/healthz": {"get": {"responses": {"200": text_response("Alive", &["ok"])}}},
            "/readyz": {"get": {"responses": {
                "200": text_response("Database and queue answer", &["ready"]),
                "503": text_response("Database or queue does not answer", &["not-ready"]),
            }}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"responses": {"200": json_response("This document", json!({"type": "object"}))}}},
        },
    })
}
