//! The OpenAPI 3.1 document of the REST API, served at `/openapi.json`. The
//! schemas are the JSON forms of the `remit.v1` messages (field names as in
//! `proto/remit/v1/remittances.proto`).

use serde_json::{json, Value};

fn obj(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn integer(description: &str) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 0, "description": description})
}

fn json_body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": reference(schema)}}})
}

fn ok(schema: &str, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": reference(schema)}}})
}

fn errors(mut responses: serde_json::Map<String, Value>) -> Value {
    for (code, text) in [
        ("400", "Invalid input; `error.field` names the field, `error.reason_code` the ISO 20022 reason"),
        ("401", "Missing or unknown API key"),
        ("403", "The remittance belongs to another client"),
        ("429", "Rate limit exceeded"),
        ("503", "Temporarily unavailable; retry"),
    ] {
        responses.insert(
            code.into(),
            json!({"description": text, "content": {"application/json": {"schema": reference("Error")}}}),
        );
    }
    Value::Object(responses)
}

fn responses(pairs: &[(&str, Value)]) -> Value {
    errors(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
}

fn uetr_parameter() -> Value {
    json!({"name": "uetr", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

/// The document.
pub fn document() -> Value {
    let statuses = json!([
        "received",
        "compliance_hold",
        "rejected",
        "submitted",
        "committed",
        "final",
        "payout_pending",
        "completed",
        "returned",
        "expired",
        "cancelled"
    ]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "remit wallet API",
            "version": "1.0.0",
            "description": "Quotes and remittances through a remit gateway. Authenticate with `Authorization: Bearer <key>` or `X-Api-Key: <key>`. Amounts are decimal strings exact to the currency's minor unit. The same operations are served over gRPC as remit.v1.Remittances on the same port."
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/quotes": {"post": {
                "operationId": "createQuote",
                "summary": "Price a remittance; the quote is firm until expires_at_ms and can be used once",
                "requestBody": json_body("CreateQuoteRequest"),
                "responses": responses(&[("200", ok("Quote", "The quote"))])
            }},
            "/v1/remittances": {
                "post": {
                    "operationId": "createRemittance",
                    "summary": "Create a remittance from a quote (idempotent per idempotency key)",
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 64}}],
                    "requestBody": json_body("CreateRemittanceRequest"),
                    "responses": responses(&[
                        ("201", ok("Remittance", "Created")),
                        ("200", ok("Remittance", "A repeat: the remittance an earlier request with the same idempotency key created")),
                        ("404", json!({"description": "Unknown quote"})),
                        ("409", json!({"description": "Quote expired or used, or the idempotency key was used for a different request"}))
                    ])
                },
                "get": {
                    "operationId": "listRemittances",
                    "summary": "List this client's remittances, oldest first",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"type": "string"}, "description": "Comma-separated statuses"},
                        {"name": "created_from_ms", "in": "query", "schema": {"type": "integer"}},
                        {"name": "created_to_ms", "in": "query", "schema": {"type": "integer"}},
                        {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                        {"name": "page_token", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": responses(&[("200", ok("ListRemittancesResponse", "A page"))])
                }
            },
            "/v1/remittances:batch": {"post": {
                "operationId": "submitRemittances",
                "summary": "Create up to 1,000 remittances; each is judged on its own",
                "requestBody": json_body("SubmitRemittancesRequest"),
                "responses": responses(&[("200", ok("SubmitRemittancesResponse", "One result per request, in order"))])
            }},
            "/v1/remittances/{uetr}": {"get": {
                "operationId": "getRemittance",
                "parameters": [uetr_parameter()],
                "responses": responses(&[("200", ok("Remittance", "The remittance")), ("404", json!({"description": "Unknown UETR"}))])
            }},
            "/v1/remittances/{uetr}/events": {"get": {
                "operationId": "watchRemittance",
                "summary": "Server-sent events: the current state, then every status change until a terminal one",
                "parameters": [uetr_parameter()],
                "responses": responses(&[("200", json!({"description": "text/event-stream of `status` events whose data is a Remittance", "content": {"text/event-stream": {"schema": {"type": "string"}}}}))])
            }},
            "/v1/remittances/{uetr}/cancel": {"post": {
                "operationId": "cancelRemittance",
                "summary": "Cancel a remittance that has not been submitted to the ledger",
                "parameters": [uetr_parameter()],
                "requestBody": {"required": false, "content": {"application/json": {"schema": obj(json!({"reason": string("Why")}))}}},
                "responses": responses(&[("200", ok("Remittance", "Cancelled")), ("409", json!({"description": "Already submitted"}))])
            }},
            "/v1/webhooks/deliveries": {"get": {
                "operationId": "listWebhookDeliveries",
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": responses(&[("200", ok("ListWebhookDeliveriesResponse", "Newest first"))])
            }}
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
            },
            "schemas": {
                "Amount": {"type": "object", "required": ["value", "currency"], "properties": {
                    "value": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$", "example": "100.00"},
                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "example": "USD"}}},
                "Error": obj(json!({"error": obj(json!({
                    "code": string("INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS, UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE or INTERNAL"),
                    "field": string("The offending field, e.g. beneficiary.account.value"),
                    "reason_code": string("ISO 20022 status reason code, e.g. AM12"),
                    "message": string("Human-readable")}))})),
                "CreateQuoteRequest": {"type": "object", "required": ["source_country", "source_currency", "destination_country", "destination_currency"], "properties": {
                    "source_country": string("ISO 3166 alpha-2"), "source_currency": string("ISO 4217"),
                    "destination_country": string("ISO 3166 alpha-2"), "destination_currency": string("ISO 4217"),
                    "send_amount": reference("Amount"), "receive_amount": reference("Amount")},
                    "description": "Exactly one of send_amount and receive_amount"},
                "Fees": obj(json!({"fixed": reference("Amount"), "percent": reference("Amount"), "fx_margin": reference("Amount"), "total": reference("Amount")})),
                "Quote": obj(json!({
                    "quote_id": string("Present it to createRemittance"), "source_country": string(""), "destination_country": string(""),
                    "fixed_side": {"type": "string", "enum": ["send", "receive"]},
                    "send_amount": reference("Amount"), "principal": reference("Amount"), "fees": reference("Fees"),
                    "mid_rate": string("Destination currency per unit of source currency"), "customer_rate": string("mid / (1 + margin)"),
                    "receive_amount": reference("Amount"), "settlement_amount": reference("Amount"),
                    "destination_participant": string("The paying gateway"),
                    "issued_at_ms": integer("Unix ms"), "expires_at_ms": integer("Unix ms")})),
                "NaturalPersonName": {"type": "object", "required": ["primary_name"], "properties": {"primary_name": string("Family name"), "secondary_name": string("Given names")}},
                "LegalPerson": {"type": "object", "required": ["name"], "properties": {"name": string("Legal name")}},
                "Account": {"type": "object", "required": ["scheme", "value"], "properties": {
                    "scheme": {"type": "string", "enum": ["iban", "msisdn", "account_number", "wallet"]}, "value": string("Identifier")}},
                "Address": {"type": "object", "required": ["town", "country"], "properties": {"street": string(""), "town": string(""), "postal_code": string(""), "country": string("ISO 3166 alpha-2")}},
                "Party": {"type": "object", "required": ["account", "country"], "description": "IVMS101-style; exactly one of natural_person and legal_person", "properties": {
                    "natural_person": reference("NaturalPersonName"), "legal_person": reference("LegalPerson"),
                    "account": reference("Account"), "country": string("ISO 3166 alpha-2"), "address": reference("Address"),
                    "date_of_birth": string("YYYY-MM-DD"), "national_id": string("")}},
                "CreateRemittanceRequest": {"type": "object", "required": ["quote_id", "originator", "beneficiary", "purpose", "idempotency_key"], "properties": {
                    "quote_id": string(""), "originator": reference("Party"), "beneficiary": reference("Party"),
                    "purpose": string("ISO 20022 purpose code, e.g. FAMI"), "idempotency_key": string("1 to 64 printable ASCII characters"),
                    "remittance_information": string("At most 140 characters")}},
                "StatusChange": obj(json!({"status": {"type": "string", "enum": statuses.clone()}, "iso_status": {"type": "string", "enum": ["RCVD", "PDNG", "ACTC", "ACSP", "ACCC", "RJCT"]},
                    "reason_code": string(""), "reason": string(""), "at_ms": integer("Unix ms")})),
                "Remittance": obj(json!({
                    "uetr": {"type": "string", "format": "uuid"}, "status": {"type": "string", "enum": statuses},
                    "iso_status": string("RCVD, PDNG, ACTC, ACSP, ACCC or RJCT"), "reason_code": string(""), "reason": string(""),
                    "quote_id": string(""), "idempotency_key": string(""), "origin": string("Originating participant"), "destination": string("Paying participant"),
                    "send_amount": reference("Amount"), "receive_amount": reference("Amount"), "settlement_amount": reference("Amount"),
                    "fees": reference("Fees"), "customer_rate": string(""), "mid_rate": string(""), "purpose": string(""),
                    "originator_masked": string("Initials and last account digits"), "beneficiary_masked": string(""),
                    "created_at_ms": integer(""), "updated_at_ms": integer(""), "ledger_height": integer("Block of the ledger transfer, 0 before"),
                    "payout_reference": string(""), "history": {"type": "array", "items": reference("StatusChange")}})),
                "ListRemittancesResponse": obj(json!({"remittances": {"type": "array", "items": reference("Remittance")}, "next_page_token": string("Empty on the last page")})),
                "SubmitRemittancesRequest": obj(json!({"remittances": {"type": "array", "maxItems": 1000, "items": reference("CreateRemittanceRequest")}})),
                "SubmitResult": obj(json!({"remittance": reference("Remittance"), "error_code": string(""), "error_field": string(""), "error_reason_code": string(""), "error_message": string("")})),
                "SubmitRemittancesResponse": obj(json!({"results": {"type": "array", "items": reference("SubmitResult")}})),
                "WebhookDelivery": obj(json!({"event_id": string(""), "uetr": string(""), "status": string(""), "attempts": {"type": "integer"},
                    "state": {"type": "string", "enum": ["pending", "delivered", "failed"]}, "last_http_status": {"type": "integer"}, "last_error": string(""),
                    "created_at_ms": integer(""), "updated_at_ms": integer("")})),
                "ListWebhookDeliveriesResponse": obj(json!({"deliveries": {"type": "array", "items": reference("WebhookDelivery")}}))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_reference_resolves() {
        let document = super::document();
        let text = document.to_string();
        let schemas = document["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        assert_eq!(document["openapi"], "3.1.0");
    }
}
