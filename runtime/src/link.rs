//! Explaining link failures: which imports an app needs that wrun does not
//! provide, all of them rather than the first.

use crate::Runtime;
use crate::load::App;
use crate::run::{ModuleHost, RunError};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, LinkerInstance, ResourceType};
use wasmtime::{Module, Store};

impl Runtime {
    pub(crate) fn module_link_error(
        &self,
        app: &App,
        module: &Module,
        error: wasmtime::Error,
    ) -> RunError {
        let Ok(linker) = self.module_linker() else {
            return link_failed(app, &error);
        };
        let Ok(host) = ModuleHost::empty() else {
            return link_failed(app, &error);
        };
        let mut store = Store::new(self.engine(), host);
        let missing: Vec<String> = module
            .imports()
            .filter(|import| linker.get_by_import(&mut store, import).is_none())
            .map(|import| {
                format!(
                    "{}::{} ({})",
                    import.module(),
                    import.name(),
                    kind(&import.ty())
                )
            })
            .collect();
        if missing.is_empty() {
            return link_failed(app, &error);
        }
        RunError::UnknownImports {
            app: app.name.clone(),
            missing,
        }
    }

    /// Finds every unsatisfied import of a component: try to pre-instantiate,
    /// note the import wasmtime names, stub it out in a scratch linker, repeat.
    pub(crate) fn component_link_error<T: 'static>(
        &self,
        app: &App,
        linker: &wasmtime::component::Linker<T>,
        component: &Component,
        error: wasmtime::Error,
    ) -> RunError {
        let engine = self.engine();
        let imports: Vec<(String, ComponentItem)> = component
            .component_type()
            .imports(engine)
            .map(|(name, item)| (name.to_owned(), item.ty))
            .collect();
        let mut scratch = linker.clone();
        scratch.allow_shadowing(true);
        let mut missing = Vec::new();
        let mut last = error;
        for _ in 0..imports.len() {
            let message = last.to_string();
            let Some((name, item)) = imports
                .iter()
                .find(|(name, _)| message.contains(&format!("`{name}`")))
            else {
                break;
            };
            if missing
                .iter()
                .any(|m: &String| m.starts_with(name.as_str()))
            {
                break;
            }
            // The innermost cause is the specific one ("function
            // implementation is missing", "expected u32, found string").
            let reason = last
                .chain()
                .last()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            missing.push(format!("{name} ({}){reason}", describe(item)));
            if stub(&mut scratch.root(), engine, name, item).is_err() {
                break;
            }
            match scratch.instantiate_pre(component) {
                Ok(_) => break,
                Err(next) => last = next,
            }
        }
        if missing.is_empty() {
            return link_failed(app, &last);
        }
        RunError::UnknownImports {
            app: app.name.clone(),
            missing,
        }
    }
}

fn link_failed(app: &App, error: &wasmtime::Error) -> RunError {
    RunError::Link {
        app: app.name.clone(),
        reason: format!("{error:#}"),
    }
}

fn kind(ty: &wasmtime::ExternType) -> &'static str {
    match ty {
        wasmtime::ExternType::Func(_) => "function",
        wasmtime::ExternType::Global(_) => "global",
        wasmtime::ExternType::Table(_) => "table",
        wasmtime::ExternType::Memory(_) => "memory",
        wasmtime::ExternType::Tag(_) => "tag",
    }
}

fn describe(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentInstance(_) => "interface",
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::Resource(_) => "resource",
        ComponentItem::Type(_) => "type",
        ComponentItem::Module(_) | ComponentItem::CoreFunc(_) => "core item",
        ComponentItem::Component(_) => "component",
    }
}

/// A resource type for stubs; only used in the scratch linker.
struct Stub;

/// Defines `name` in `instance` so that the next pre-instantiation gets past it.
fn stub<T: 'static>(
    instance: &mut LinkerInstance<'_, T>,
    engine: &wasmtime::Engine,
    name: &str,
    item: &ComponentItem,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            instance.func_new(name, |_, _, _, _| wasmtime::bail!("stub"))
        }
        ComponentItem::Resource(_) => {
            instance.resource(name, ResourceType::host::<Stub>(), |_, _| Ok(()))
        }
        ComponentItem::ComponentInstance(ty) => {
            let mut nested = instance.instance(name)?;
            for (export, item) in ty.exports(engine) {
                stub(&mut nested, engine, export, &item.ty)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
