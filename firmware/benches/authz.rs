//! Authorization check cost: 50 roles (the 7 built-ins and 43 custom), 10,000 users
//! with 1-3 roles and 1-2 groups each, random (user, resource, action, record) checks.
//! Target (issue 4): under 2 µs per check.

use std::hint::black_box;

use branchline_firmware::rbac::{
    builtin::builtin_roles, Action, Authorizer, GroupId, Permission, Resource, RoleGrants, RoleId,
    Scope, Subject, Target, UserId,
};
use criterion::{criterion_group, criterion_main, Criterion};

/// One check: user index, resource, action, record.
type Check = (usize, Resource, Action, Target);

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn setup() -> (Authorizer, Vec<Subject>, Vec<Check>) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut roles: Vec<RoleGrants> = builtin_roles()
        .expect("builtin roles")
        .into_iter()
        .enumerate()
        .map(|(i, r)| RoleGrants {
            id: RoleId(i as i64 + 1),
            name: r.name,
            permissions: r.permissions,
        })
        .collect();
    while roles.len() < 50 {
        let id = roles.len() as i64 + 1;
        let permissions = (0..20)
            .map(|_| {
                Permission::new(
                    Resource::ALL[rng.below(Resource::ALL.len())],
                    Action::ALL[rng.below(Action::ALL.len())],
                    Scope::ALL[rng.below(Scope::ALL.len())],
                )
            })
            .collect();
        roles.push(RoleGrants {
            id: RoleId(id),
            name: format!("custom_{id}"),
            permissions,
        });
    }
    let authz = Authorizer::new(roles, 1);
    let users: Vec<Subject> = (0..10_000)
        .map(|i| {
            let groups: Vec<GroupId> = (0..1 + rng.below(2))
                .map(|_| GroupId(rng.below(200) as i64))
                .collect();
            Subject {
                user_id: UserId(i),
                username: format!("user{i}"),
                roles: (0..1 + rng.below(3))
                    .map(|_| RoleId(1 + rng.below(50) as i64))
                    .collect(),
                admin_of_groups: if rng.below(10) == 0 {
                    groups.clone()
                } else {
                    Vec::new()
                },
                groups,
                enabled: true,
                locked: false,
            }
        })
        .collect();
    let checks = (0..4096)
        .map(|_| {
            let target = if rng.below(5) == 0 {
                Target::Site
            } else {
                Target::Owned {
                    owner: Some(UserId(rng.below(10_000) as i64)),
                    groups: vec![GroupId(rng.below(200) as i64)],
                }
            };
            (
                rng.below(users.len()),
                Resource::ALL[rng.below(Resource::ALL.len())],
                Action::ALL[rng.below(Action::ALL.len())],
                target,
            )
        })
        .collect();
    (authz, users, checks)
}

fn bench(c: &mut Criterion) {
    let (authz, users, checks) = setup();
    let mut i = 0;
    c.bench_function("authorize (50 roles, 10k users, random)", |b| {
        b.iter(|| {
            let (u, resource, action, target) = &checks[i % checks.len()];
            i += 1;
            black_box(authz.authorize(black_box(&users[*u]), *resource, *action, target))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
