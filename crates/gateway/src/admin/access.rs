//! Who may call which admin route: ONE table mapping (method, route) to
//! the weakest role allowed, deny by default.
//!
//! A route that is not in [`ROUTES`] is refused for every admin, owners
//! included, with `route_not_in_access_table`: adding a route without
//! deciding who may call it cannot open it to everyone. A test walks the
//! routes the admin router is built from and fails on any without an entry.
//! Roles include each other: `viewer` < `auditor` < `operator` < `owner`.

use http::Method;
use keyforge_types::AdminRole::{self, Auditor, Operator, Owner, Viewer};

/// Where every admin route is mounted; routes are written without it.
pub(crate) const PREFIX: &str = "/admin/v1";

/// (method, route as registered, weakest role allowed). `HEAD` is `GET`.
pub(crate) const ROUTES: &[(Method, &str, AdminRole)] = &[
    // viewer: usage, budgets, keys without secrets, status; read only.
    (Method::GET, "/status", Viewer),
    (Method::GET, "/usage", Viewer),
    (Method::GET, "/prices", Viewer),
    (Method::GET, "/doctor", Viewer),
    (Method::GET, "/budgets", Viewer),
    (Method::GET, "/keys", Viewer),
    (Method::GET, "/keys/{id}", Viewer),
    (Method::GET, "/providers", Viewer),
    (Method::GET, "/providers/{id}/rotation", Viewer),
    (Method::GET, "/alerts", Viewer),
    (Method::GET, "/alerts/log", Viewer),
    (Method::GET, "/whoami", Viewer),
    // A human's OIDC session ends itself (`keyforge admin logout`).
    (Method::POST, "/session/end", Viewer),
    // auditor: also the audit log.
    (Method::GET, "/audit", Auditor),
    (Method::GET, "/audit/export", Auditor),
    (Method::GET, "/audit/verify", Auditor),
    // operator: also keys, budgets, rotation and alerts.
    (Method::POST, "/keys", Operator),
    (Method::PATCH, "/keys/{id}", Operator),
    (Method::POST, "/keys/revoke", Operator),
    (Method::POST, "/keys/{id}/revoke", Operator),
    (Method::POST, "/keys/{id}/resume", Operator),
    (Method::POST, "/keys/{id}/rotate", Operator),
    (Method::POST, "/budgets", Operator),
    (Method::DELETE, "/budgets/{id}", Operator),
    (Method::POST, "/providers/{id}/rotation", Operator),
    (Method::POST, "/providers/{id}/rotation/promote", Operator),
    (Method::POST, "/providers/{id}/rotation/finish", Operator),
    (Method::POST, "/providers/{id}/rotation/rollback", Operator),
    (Method::POST, "/providers/{id}/rotation/cancel", Operator),
    (Method::POST, "/alerts", Operator),
    (Method::DELETE, "/alerts/{id}", Operator),
    // Sends to every webhook: a write as far as the receivers are concerned.
    (Method::POST, "/alerts/test", Operator),
    // owner: also providers, admins and backups.
    (Method::POST, "/providers", Owner),
    (Method::PATCH, "/providers/{id}", Owner),
    (Method::DELETE, "/providers/{id}", Owner),
    (Method::GET, "/admins", Owner),
    (Method::POST, "/admins", Owner),
    (Method::POST, "/admins/{name}/revoke", Owner),
    (Method::POST, "/admins/{name}/rotate-token", Owner),
    (Method::POST, "/backup", Owner),
];

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The route as registered (`/keys/{id}`), never the request's path.
    pub(crate) route: String,
    /// The role it needs; `None`: the route is not in the table at all.
    pub(crate) needed: Option<AdminRole>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    Refuse(Refusal),
    /// The route exists, and the role may call some of its methods, but
    /// not this one: 405 with `Allow` listing the route's methods (every
    /// method the table has for it, whichever role each needs: the route's
    /// shape, not the admin's rights). A role that may call none of the
    /// route's methods is refused instead ([`Decision::Refuse`]), so a
    /// wrong method teaches it nothing a right one would not.
    MethodNotAllowed {
        /// The route's methods, in table order, `HEAD` after `GET`.
        allow: Vec<Method>,
    },
    /// No route matched (the router answers 404; nothing to authorize).
    NoSuchRoute,
}

/// The weakest role allowed to call `method route`; `None` when the pair
/// is not in the table.
pub(crate) fn required_role(method: &Method, route: &str) -> Option<AdminRole> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|(m, r, _)| m == method && *r == route)
        .map(|(_, _, role)| *role)
}

/// Whether `role` may call `method` on the route axum matched (the
/// registered template, with or without [`PREFIX`]; `None` when no route
/// matched).
pub(crate) fn check(method: &Method, matched: Option<&str>, role: AdminRole) -> Decision {
    let Some(matched) = matched else {
        return Decision::NoSuchRoute;
    };
    let route = matched.strip_prefix(PREFIX).unwrap_or(matched);
    match required_role(method, route) {
        Some(needed) if role >= needed => Decision::Allow,
        None if may_use_route(route, role) => Decision::MethodNotAllowed {
            allow: route_methods(route),
        },
        needed => Decision::Refuse(Refusal {
            route: route.to_owned(),
            needed,
        }),
    }
}

/// Whether `role` may call at least one method of `route`.
fn may_use_route(route: &str, role: AdminRole) -> bool {
    ROUTES
        .iter()
        .any(|(_, r, needed)| *r == route && role >= *needed)
}

/// The methods the table has for `route`; `HEAD` wherever `GET` is.
fn route_methods(route: &str) -> Vec<Method> {
    let mut methods = Vec::new();
    for (method, r, _) in ROUTES {
        if *r == route && !methods.contains(method) {
            methods.push(method.clone());
            if *method == Method::GET {
                methods.push(Method::HEAD);
            }
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_admin_router_has_a_minimum_role() {
        let (_, routes) = super::super::routes();
        assert!(routes.len() >= 30, "the walk found {} routes", routes.len());
        let missing: Vec<String> = routes
            .iter()
            .filter(|(method, path)| required_role(method, path).is_none())
            .map(|(method, path)| format!("{method} {path}"))
            .collect();
        assert!(
            missing.is_empty(),
            "admin routes without an entry in access::ROUTES: {missing:?}"
        );
        // And no entry names a route the router does not have (a typo in
        // the table would otherwise leave the real route refused).
        let stale: Vec<String> = ROUTES
            .iter()
            .filter(|(method, path, _)| !routes.iter().any(|(m, p)| m == method && p == path))
            .map(|(method, path, _)| format!("{method} {path}"))
            .collect();
        assert!(stale.is_empty(), "entries for no route: {stale:?}");
    }

    #[test]
    fn a_route_missing_from_the_table_is_refused_to_every_role() {
        for role in AdminRole::ALL {
            assert_eq!(
                check(&Method::POST, Some("/admin/v1/self-destruct"), role),
                Decision::Refuse(Refusal {
                    route: "/self-destruct".to_owned(),
                    needed: None,
                })
            );
        }
        assert_eq!(check(&Method::GET, None, Owner), Decision::NoSuchRoute);
    }

    #[test]
    fn a_wrong_method_is_405_only_for_a_role_that_may_use_the_route() {
        // (method, route, role, expected): `Some(allow)` is a 405 with
        // those methods, `None` a refusal.
        let cases: &[(Method, &str, AdminRole, Option<&[Method]>)] = &[
            (
                Method::PUT,
                "/keys",
                Viewer,
                Some(&[Method::GET, Method::HEAD, Method::POST]),
            ),
            (
                Method::PUT,
                "/keys",
                Owner,
                Some(&[Method::GET, Method::HEAD, Method::POST]),
            ),
            (
                Method::DELETE,
                "/keys/{id}",
                Viewer,
                Some(&[Method::GET, Method::HEAD, Method::PATCH]),
            ),
            (
                Method::PATCH,
                "/audit",
                Auditor,
                Some(&[Method::GET, Method::HEAD]),
            ),
            // A viewer may use no method of these: refused as before.
            (Method::PATCH, "/audit", Viewer, None),
            (Method::PUT, "/admins", Viewer, None),
            (Method::PUT, "/backup", Operator, None),
            (Method::GET, "/backup", Owner, Some(&[Method::POST])),
        ];
        for (method, route, role, expected) in cases {
            let got = check(method, Some(&format!("{PREFIX}{route}")), *role);
            match expected {
                Some(allow) => assert_eq!(
                    got,
                    Decision::MethodNotAllowed {
                        allow: allow.to_vec()
                    },
                    "{role} {method} {route}"
                ),
                None => assert!(
                    matches!(got, Decision::Refuse(Refusal { needed: None, .. })),
                    "{role} {method} {route}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn roles_reach_what_the_readme_says() {
        // (method, route, weakest role that may call it)
        let cases: &[(Method, &str, AdminRole)] = &[
            (Method::GET, "/usage", Viewer),
            (Method::HEAD, "/keys", Viewer),
            (Method::GET, "/audit/verify", Auditor),
            (Method::POST, "/keys", Operator),
            (Method::POST, "/providers/{id}/rotation/promote", Operator),
            (Method::POST, "/alerts/test", Operator),
            (Method::POST, "/providers", Owner),
            (Method::POST, "/admins", Owner),
            (Method::POST, "/backup", Owner),
        ];
        for (method, route, weakest) in cases {
            let full = format!("{PREFIX}{route}");
            for role in AdminRole::ALL {
                let allowed = check(method, Some(&full), role) == Decision::Allow;
                assert_eq!(allowed, role >= *weakest, "{role} {method} {route}");
            }
        }
    }
}
