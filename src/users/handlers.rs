//! User endpoints.

use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{Password, User, UserView, Username};
use super::store;
use crate::AppState;
use crate::activity::Author;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, Errors, ValidationErrors};
use crate::extract::{ApiJson, Id, JsonObject, bool_field, string_field};
use crate::listing::{Column, Kind, Listing, column};
use crate::metadata::{Field, options};
use crate::pagination::{ListParams, Page, PageParams};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me, me_options))
        .routes(routes!(list_users, create_user, users_options))
        .routes(routes!(get_user, update_user, delete_user, user_options))
}

/// A user's fields as `OPTIONS` describes them.
pub const FIELDS: &[Field] = &[
    Field::new("id", "integer", "ID", "Database ID for this user.").filterable(),
    Field::new("type", "choice", "Type", "Data type for this user.").choices(&["user"]),
    Field::new("url", "string", "Url", "URL for this user."),
    Field::new("related", "object", "Related", "Data structure with URLs of related resources."),
    Field::new("username", "string", "Username", "150 characters or fewer: letters, digits and @/./+/-/_ only.")
        .filterable(),
    Field::new("is_superuser", "boolean", "Superuser Status", "Superusers can do everything.").filterable(),
    Field::new("is_system_auditor", "boolean", "System Auditor", "System auditors can read everything.").filterable(),
    Field::new("is_active", "boolean", "Active", "Inactive users cannot log in; deactivating ends their sessions.")
        .filterable(),
    Field::new("created", "datetime", "Created", "Timestamp when this user was created.").filterable(),
    Field::new("modified", "datetime", "Modified", "Timestamp when this user was last modified.").filterable(),
    Field::new("last_login", "datetime", "Last Login", "Timestamp of the user's last login.").filterable(),
];

const CREATE_FIELDS: &[Field] = &[
    Field::new("username", "string", "Username", "150 characters or fewer: letters, digits and @/./+/-/_ only.")
        .required()
        .max_length(150),
    Field::new("password", "string", "Password", "At least 8 characters.").required(),
    Field::new("is_superuser", "boolean", "Superuser Status", "Superusers can do everything."),
    Field::new("is_system_auditor", "boolean", "System Auditor", "System auditors can read everything."),
];

const UPDATE_FIELDS: &[Field] = &[
    Field::new("username", "string", "Username", "150 characters or fewer: letters, digits and @/./+/-/_ only.")
        .max_length(150),
    Field::new("password", "string", "Password", "At least 8 characters; ends the user's sessions (password_changed)."),
    Field::new("is_active", "boolean", "Active", "false ends the user's sessions (user_disabled) and refuses logins."),
    Field::new("is_superuser", "boolean", "Superuser Status", "Superusers can do everything."),
    Field::new("is_system_auditor", "boolean", "System Auditor", "System auditors can read everything."),
];

/// Describe the current user.
#[utoipa::path(options, path = "/api/v2/me/", tag = "users",
    responses((status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn me_options(_caller: Caller) -> Response {
    options("Me", "The user you are logged in as.", "GET, HEAD, OPTIONS", &[("GET", FIELDS)])
}

/// Describe the user list: its fields (`actions.GET`, all filterable) and, for superusers,
/// what creating a user takes (`actions.POST`).
#[utoipa::path(options, path = "/api/v2/users/", tag = "users",
    responses((status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn users_options(caller: Caller) -> ApiResult<Response> {
    caller.require_reader()?;
    let mut actions: Vec<(&str, &[Field])> = vec![("GET", FIELDS)];
    if caller.user.is_superuser {
        actions.push(("POST", CREATE_FIELDS));
    }
    Ok(options("User List", "Users, and creating one (superuser).", "GET, POST, HEAD, OPTIONS", &actions))
}

/// Describe a user: its fields and, for superusers, what a PATCH may change.
#[utoipa::path(options, path = "/api/v2/users/{id}/", tag = "users", params(("id" = i64, Path)),
    responses((status = 404, body = ErrorBody), (status = 400, description = "The id is not a number", body = ErrorBody), (status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn user_options(State(state): State<AppState>, caller: Caller, Id(id): Id) -> ApiResult<Response> {
    caller.require_reader()?;
    store::by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    let mut actions: Vec<(&str, &[Field])> = vec![("GET", FIELDS)];
    if caller.user.is_superuser {
        actions.push(("PATCH", UPDATE_FIELDS));
    }
    Ok(options(
        "User Detail",
        "A user; changing and deleting it (superuser).",
        "GET, PATCH, DELETE, HEAD, OPTIONS",
        &actions,
    ))
}

/// The user you are logged in as.
#[utoipa::path(get, path = "/api/v2/me/", tag = "users",
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn me(caller: Caller) -> axum::Json<UserView> {
    axum::Json(UserView::from(&caller.user))
}

/// The columns a user list can be filtered and ordered by.
pub(crate) const COLUMNS: &[Column] = &[
    column("id", "id", Kind::Integer),
    column("username", "username", Kind::Text),
    column("is_superuser", "is_superuser", Kind::Boolean),
    column("is_system_auditor", "is_system_auditor", Kind::Boolean),
    column("is_active", "is_active", Kind::Boolean),
    column("created", "created_at", Kind::Time),
    column("modified", "modified_at", Kind::Time),
    column("last_login", "last_login_at", Kind::Time),
];

/// Users (superuser or system auditor).
///
/// In the order they were created unless `?order_by=` says otherwise (`-field` for
/// descending); `?field=value` keeps exact matches (`?username=alice`, `?is_active=false`).
#[utoipa::path(get, path = "/api/v2/users/", tag = "users", params(PageParams, ListParams),
    responses((status = 200, body = Page<UserView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(params): Query<PageParams>,
) -> ApiResult<axum::Json<Page<UserView>>> {
    caller.require_reader()?;
    let request = params.resolve()?;
    let listing = Listing::parse(uri.query(), COLUMNS, &[], "id", 1)?;
    let columns = "id, username, is_superuser, is_system_auditor, is_active, created_at, modified_at, last_login_at";
    let (request, count, users): (_, _, Vec<User>) =
        listing.fetch(&state.db, &[], columns, "users WHERE {where}", request).await?;
    Ok(axum::Json(Page::new(&uri, request, count, users.iter().map(UserView::from).collect())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateUser {
    /// 1 to 150 letters, digits and @/./+/-/_.
    #[schema(min_length = 1, max_length = 150, pattern = r"^[\w.@+-]+$")]
    username: String,
    /// At least 8 characters (at most 1024 bytes).
    #[schema(format = Password, min_length = 8, max_length = 1024)]
    password: String,
    #[serde(default)]
    is_superuser: bool,
    #[serde(default)]
    is_system_auditor: bool,
}

/// Create a user (superuser).
#[utoipa::path(post, path = "/api/v2/users/", tag = "users", request_body = CreateUser,
    responses((status = 401, description = "Not authenticated, or the session ended", body = ErrorBody), (status = 201, body = UserView), (status = 400, description = "Field errors; nothing was written", body = ValidationErrors), (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<(StatusCode, axum::Json<UserView>)> {
    caller.require_superuser()?;
    let mut errors = Errors::default();
    let username =
        string_field(&body, "username", &mut errors).and_then(|u| errors.check("username", Username::parse(u)));
    let password =
        string_field(&body, "password", &mut errors).and_then(|p| errors.check("password", Password::parse(p)));
    let is_superuser = bool_field(&body, "is_superuser", &mut errors).unwrap_or(false);
    let is_system_auditor = bool_field(&body, "is_system_auditor", &mut errors).unwrap_or(false);
    reject_unknown(&body, &["username", "password", "is_superuser", "is_system_auditor"], &mut errors);
    errors.finish()?;
    let (Some(username), Some(password)) = (username, password) else { unreachable!("errors were reported") };
    let user = super::create(&state, &username, &password, is_superuser, is_system_auditor, &Author::api(&caller.user))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::from(&user))))
}

fn reject_unknown(body: &JsonObject, known: &[&str], errors: &mut Errors) {
    for key in body.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.add(key, "Unknown field.");
    }
}

/// One user (superuser or system auditor).
#[utoipa::path(get, path = "/api/v2/users/{id}/", tag = "users", params(("id" = i64, Path)),
    responses((status = 400, description = "The id is not a number", body = ErrorBody), (status = 401, description = "Not authenticated, or the session ended", body = ErrorBody), (status = 200, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn get_user(State(state): State<AppState>, caller: Caller, Id(id): Id) -> ApiResult<axum::Json<UserView>> {
    caller.require_reader()?;
    let user = store::by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(UserView::from(&user)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UpdateUser {
    /// 1 to 150 letters, digits and @/./+/-/_.
    #[schema(min_length = 1, max_length = 150, pattern = r"^[\w.@+-]+$")]
    username: Option<String>,
    /// A new password (8 characters to 1024 bytes) ends the user's sessions (`password_changed`).
    #[schema(format = Password, min_length = 8, max_length = 1024)]
    password: Option<String>,
    /// `false` ends the user's sessions (`user_disabled`) and refuses further logins.
    is_active: Option<bool>,
    is_superuser: Option<bool>,
    is_system_auditor: Option<bool>,
}

/// Change a user (superuser).
///
/// A new `password` ends all the user's sessions with `password_changed`; `is_active: false`
/// ends them with `user_disabled`. You cannot deactivate yourself or take away your own
/// superuser flag.
#[utoipa::path(patch, path = "/api/v2/users/{id}/", tag = "users", params(("id" = i64, Path)), request_body = UpdateUser,
    responses((status = 401, description = "Not authenticated, or the session ended", body = ErrorBody), (status = 200, body = UserView), (status = 400, description = "Field errors; nothing was written", body = ValidationErrors),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<axum::Json<UserView>> {
    caller.require_superuser()?;
    let mut errors = Errors::default();
    let optional = |field: &str, errors: &mut Errors| {
        body.get(field).filter(|v| !v.is_null()).and_then(|_| string_field(&body, field, errors))
    };
    let username = optional("username", &mut errors).and_then(|u| errors.check("username", Username::parse(u)));
    let password = optional("password", &mut errors).and_then(|p| errors.check("password", Password::parse(p)));
    let is_active = bool_field(&body, "is_active", &mut errors);
    let is_superuser = bool_field(&body, "is_superuser", &mut errors);
    let is_system_auditor = bool_field(&body, "is_system_auditor", &mut errors);
    reject_unknown(&body, &["username", "password", "is_active", "is_superuser", "is_system_auditor"], &mut errors);
    if id == caller.user.id && is_active == Some(false) {
        errors.add("is_active", "You cannot deactivate your own account.");
    }
    if id == caller.user.id && is_superuser == Some(false) {
        errors.add("is_superuser", "You cannot remove your own superuser status.");
    }
    errors.finish()?;
    let changes = super::Changes { username, password, is_active, is_superuser, is_system_auditor };
    let user = super::update(&state, id, &changes, &Author::api(&caller.user)).await?;
    Ok(axum::Json(UserView::from(&user)))
}

/// Delete a user (superuser).
///
/// The user's sessions end with `user_disabled` and are kept (without their user) for the
/// retention period, so their clients are still told why.
#[utoipa::path(delete, path = "/api/v2/users/{id}/", tag = "users", params(("id" = i64, Path)),
    responses((status = 401, description = "Not authenticated, or the session ended", body = ErrorBody), (status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 403, description = "Not a superuser, or the user is yourself", body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn delete_user(State(state): State<AppState>, caller: Caller, Id(id): Id) -> ApiResult<StatusCode> {
    caller.require_superuser()?;
    if id == caller.user.id {
        return Err(ApiError::Forbidden("You cannot delete your own account."));
    }
    super::delete(&state, id, &Author::api(&caller.user)).await?;
    Ok(StatusCode::NO_CONTENT)
}
