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

fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": reference("Error")}}})
}

/// The errors every operation can answer, each with the JSON error body.
const COMMON_ERRORS: [(&str, &str); 10] = [
    (
        "400",
        "The request does not fit this document: malformed JSON, a value of the wrong type, a parameter outside its \
         documented form",
    ),
    ("401", "Missing or unknown API key"),
    ("404", "No such resource (or no such route)"),
    ("405", "Method not allowed on this path (`Allow` lists the methods)"),
    ("413", "Body too large"),
    ("415", "A body that is not `application/json`"),
    (
        "422",
        "A well-formed request refused: `error.field` names the value, `error.reason_code` the ISO 20022 reason \
         where one fits",
    ),
    ("429", "Rate limit exceeded"),
    ("500", "Internal error"),
    ("503", "Temporarily unavailable; retry"),
];

fn responses(pairs: &[(&str, Value)]) -> Value {
    let mut map: serde_json::Map<String, Value> =
        COMMON_ERRORS.iter().map(|(code, text)| ((*code).to_owned(), error(text))).collect();
    for (code, value) in pairs {
        map.insert((*code).to_owned(), value.clone());
    }
    Value::Object(map)
}

/// A UETR: a UUID version 4, hyphenated.
const UETR_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$";

fn uetr_parameter() -> Value {
    json!({"name": "uetr", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid", "pattern": UETR_PATTERN}})
}

fn country() -> Value {
    json!({"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166 alpha-2"})
}

fn currency() -> Value {
    json!({"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217"})
}

/// 1 to 64 printable ASCII characters without spaces.
const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,64}$";

/// Unix milliseconds as the API takes them (an int64 that is not negative).
fn unix_ms(description: &str) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX, "description": description})
}

/// Comma-separated statuses, 1 to 16 of them.
fn status_filter_pattern(statuses: &Value) -> String {
    let names: Vec<&str> =
        statuses.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let one = format!("({})", names.join("|"));
    format!("^{one}(,{one}){{0,15}}$")
}

/// How a create request is judged: alone (refused whole, so the document
/// holds its constraints) or as an item of a batch (each item is judged on
/// its own and refused in its result, so only the types are documented).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Judged {
    Alone,
    InBatch,
}

fn create_request(judged: Judged) -> Value {
    let party = match judged {
        Judged::Alone => reference("Party"),
        Judged::InBatch => json!({"type": "object", "description": "A Party"}),
    };
    let mut schema = json!({"type": "object", "properties": {
        "quote_id": string("From createQuote (a UUID)"), "originator": party.clone(), "beneficiary": party,
        "purpose": string("ISO 20022 purpose code, e.g. FAMI"),
        "idempotency_key": string("1 to 64 printable ASCII characters without spaces"),
        "remittance_information": string("At most 140 characters")}});
    if judged == Judged::Alone {
        schema["required"] = json!(["quote_id", "originator", "beneficiary", "purpose", "idempotency_key"]);
        schema["properties"]["quote_id"]["format"] = json!("uuid");
        schema["properties"]["purpose"]["pattern"] = json!("^[A-Z0-9]{4}$");
        schema["properties"]["idempotency_key"]["pattern"] = json!(IDEMPOTENCY_KEY_PATTERN);
        schema["properties"]["remittance_information"]["maxLength"] = json!(140);
    } else {
        schema["description"] =
            json!("A CreateRemittanceRequest; a missing or refused field refuses this item only, in its result");
    }
    schema
}

/// The document.
pub fn document() -> Value {
    let mut document = body();
    if let Some(schemas) = document["components"]["schemas"].as_object_mut() {
        for schema in schemas.values_mut() {
            nullable_optional_objects(schema);
        }
    }
    document
}

/// Optional object properties (messages) take `null` for absent, as the
/// JSON form of the protobuf messages writes them: the document says so.
fn nullable_optional_objects(schema: &mut Value) {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else { return };
    for (name, property) in properties.iter_mut() {
        nullable_optional_objects(property);
        let is_object = property.get("$ref").is_some() || property["type"] == "object";
        if is_object && !required.contains(name) {
            *property = json!({"anyOf": [property.clone(), {"type": "null"}]});
        }
    }
}

fn body() -> Value {
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
    let status_pattern = status_filter_pattern(&statuses);
    let page_token_pattern = format!("^[0-9]{{1,19}}_{}", UETR_PATTERN.trim_start_matches('^'));
    let conflict = error("Quote expired or used, or the idempotency key was used for a different request");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "remit wallet API",
            "version": "1.0.0",
            "description": "Quotes and remittances through a remit gateway. Authenticate with `Authorization: Bearer <key>` or `X-Api-Key: <key>`. Amounts are decimal strings exact to the currency's minor unit. Every error is the `Error` body: 400 when a request does not fit this document, 422 when a well-formed request is refused (its field named). The same operations are served over gRPC as remit.v1.Remittances on the same port."
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
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "description": "Instead of the body's idempotency_key (or equal to it)", "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}}],
                    "requestBody": json_body("CreateRemittanceRequest"),
                    "responses": responses(&[
                        ("201", ok("Remittance", "Created")),
                        ("200", ok("Remittance", "A repeat: the remittance an earlier request with the same idempotency key created")),
                        ("404", error("Unknown quote")),
                        ("409", conflict)
                    ])
                },
                "get": {
                    "operationId": "listRemittances",
                    "summary": "List this client's remittances, oldest first",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"type": "string", "pattern": status_pattern}, "description": "Comma-separated statuses (1 to 16)"},
                        {"name": "created_from_ms", "in": "query", "schema": unix_ms("Created at or after (Unix ms)")},
                        {"name": "created_to_ms", "in": "query", "schema": unix_ms("Created before (Unix ms)")},
                        {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}, "description": "Default 50"},
                        {"name": "page_token", "in": "query", "schema": {"type": "string", "pattern": page_token_pattern}, "description": "next_page_token of the previous page"}
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
                "responses": responses(&[("200", ok("Remittance", "The remittance")), ("403", error("Another client's remittance")), ("404", error("Unknown UETR"))])
            }},
            "/v1/remittances/{uetr}/events": {"get": {
                "operationId": "watchRemittance",
                "summary": "Server-sent events: the current state, then every status change until a terminal one",
                "parameters": [uetr_parameter()],
                "responses": responses(&[("200", json!({"description": "text/event-stream of `status` events whose data is a Remittance", "content": {"text/event-stream": {"schema": {"type": "object", "required": ["event", "data"], "properties": {
                    "event": {"type": "string", "enum": ["status"]},
                    "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": reference("Remittance")}}}}}})), ("403", error("Another client's remittance"))])
            }},
            "/v1/remittances/{uetr}/cancel": {"post": {
                "operationId": "cancelRemittance",
                "summary": "Cancel a remittance that has not been submitted to the ledger",
                "parameters": [uetr_parameter()],
                "requestBody": {"required": false, "content": {"application/json": {"schema": reference("CancelRequest")}}},
                "responses": responses(&[("200", ok("Remittance", "Cancelled")), ("403", error("Another client's remittance")), ("409", error("Already submitted"))])
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
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "enum": ["INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "ALREADY_EXISTS", "UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED", "UNAVAILABLE", "INTERNAL"]},
                    "field": string("The offending field, e.g. beneficiary.account.value; absent when none"),
                    "reason_code": string("ISO 20022 status reason code, e.g. AM12; absent when none fits"),
                    "message": string("Human-readable")}}}},
                "CreateQuoteRequest": {"type": "object", "required": ["source_country", "source_currency", "destination_country", "destination_currency"], "properties": {
                    "source_country": country(), "source_currency": currency(),
                    "destination_country": country(), "destination_currency": currency(),
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
                "CancelRequest": obj(json!({"reason": string("Why")})),
                "CreateRemittanceRequest": create_request(Judged::Alone),
                "BatchItem": create_request(Judged::InBatch),
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
                "SubmitRemittancesRequest": {"type": "object", "required": ["remittances"], "properties": {"remittances": {"type": "array", "minItems": 1, "maxItems": 1000, "items": reference("BatchItem")}}},
                "SubmitResult": {"type": "object", "description": "Either the remittance (error fields empty) or, for a refused item, null and the error", "properties": {
                    "remittance": {"anyOf": [reference("Remittance"), {"type": "null"}]}, "error_code": string("Empty, or the code of the item's error"),
                    "error_field": string(""), "error_reason_code": string(""), "error_message": string("")}},
                "SubmitRemittancesResponse": obj(json!({"results": {"type": "array", "items": reference("SubmitResult")}})),
                "WebhookDelivery": obj(json!({"event_id": string(""), "uetr": string(""), "status": string(""), "attempts": {"type": "integer"},
                    "state": {"type": "string", "enum": ["pending", "delivered", "failed"]}, "last_http_status": {"type": "integer"}, "last_error": string(""),
                    "created_at_ms": integer(""), "updated_at_ms": integer("")})),
                "ListWebhookDeliveriesResponse": obj(json!({"deliveries": {"type": "array", "items": reference("WebhookDelivery")}}))
            }
        }
    })
}

/// The document, built once.
fn cached() -> &'static Value {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(document)
}

/// Checks the JSON types of a request body against the component schema
/// `schema` (objects, strings, integers, arrays, `null` only where allowed):
/// serde alone would take `[..]` for an object and `null` for an absent
/// object. Values (patterns, required fields, business rules) are judged
/// by the API after this. Returns the path of the first mistyped value.
pub fn check_types(schema: &str, value: &Value) -> Result<(), (String, String)> {
    let components = &cached()["components"]["schemas"];
    check_value(&components[schema], value, components, "")
}

fn check_value(schema: &Value, value: &Value, components: &Value, path: &str) -> Result<(), (String, String)> {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let name = target.trim_start_matches("#/components/schemas/");
        return check_value(&components[name], value, components, path);
    }
    if let Some(choices) = schema.get("anyOf").and_then(Value::as_array) {
        let mut first_error = None;
        for choice in choices {
            match check_value(choice, value, components, path) {
                Ok(()) => return Ok(()),
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
        return first_error.map_or(Ok(()), Err);
    }
    let field = || if path.is_empty() { "body".to_owned() } else { path.to_owned() };
    let wrong = |expected: &str| Err((field(), format!("must be {expected}, not {}", json_type(value))));
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(object) = value.as_object() else { return wrong("an object") };
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return Ok(()) };
            for (name, property) in properties {
                if let Some(inner) = object.get(name) {
                    let inner_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                    check_value(property, inner, components, &inner_path)?;
                }
            }
            Ok(())
        }
        Some("array") => {
            let Some(items) = value.as_array() else { return wrong("an array") };
            for (i, item) in items.iter().enumerate() {
                check_value(&schema["items"], item, components, &format!("{}[{i}]", field()))?;
            }
            Ok(())
        }
        Some("string") if !value.is_string() => wrong("a string"),
        Some("integer") if !(value.is_u64() || value.is_i64()) => wrong("an integer"),
        Some("null") if !value.is_null() => wrong("null"),
        _ => Ok(()),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

    #[test]
    fn bodies_of_the_wrong_json_types_are_named() {
        use serde_json::json;
        let check = |schema: &str, value: serde_json::Value, expected: Result<(), &str>| {
            let got = super::check_types(schema, &value).map_err(|(field, _)| field);
            assert_eq!(got, expected.map_err(str::to_owned), "{schema} {value}");
        };
        let amount = json!({"value": "1.00", "currency": "USD"});
        check("CreateQuoteRequest", json!({"source_country": "US", "send_amount": amount}), Ok(()));
        check("CreateQuoteRequest", json!({"send_amount": ["1.00", "USD"]}), Err("send_amount"));
        // An absent optional message may be written as null (protobuf JSON does); a required one may not.
        check("CreateQuoteRequest", json!({"send_amount": null, "receive_amount": amount}), Ok(()));
        check("CreateRemittanceRequest", json!({"originator": null}), Err("originator"));
        check("CreateRemittanceRequest", json!({"originator": {"legal_person": null, "address": null}}), Ok(()));
        check("CreateQuoteRequest", json!({"source_country": 7}), Err("source_country"));
        check("CreateQuoteRequest", json!([]), Err("body"));
        check(
            "SubmitRemittancesRequest",
            json!({"remittances": [{"originator": [null, null]}]}),
            Err("remittances[0].originator"),
        );
        check("SubmitRemittancesRequest", json!({"remittances": [{"purpose": "FAMI"}, 3]}), Err("remittances[1]"));
        check(
            "CreateRemittanceRequest",
            json!({"originator": {"account": {"scheme": 1}}}),
            Err("originator.account.scheme"),
        );
        // Undocumented properties are left to the API.
        check("CreateRemittanceRequest", json!({"quote": {"anything": 1}}), Ok(()));
    }
}
