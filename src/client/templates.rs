//! `ffrtmp templates list|show|create|delete`.

use super::{CliError, OutputFormat, Settings, client, print_json};
use crate::wire::Template;
use clap::Subcommand;
use serde_json::{Map, Value, json};

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List the templates (built-ins and stored, current versions).
    List,
    /// Show a template's parameters.
    Show {
        name: String,
        #[arg(long)]
        version: Option<i32>,
    },
    /// Store a template (a new version if the name exists) from a JSON file of parameters.
    Create {
        name: String,
        /// JSON object of job parameters (`-` for stdin).
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete every version of a stored template.
    Delete { name: String },
}

pub async fn run(s: &Settings, cmd: TemplatesCommand) -> Result<i32, CliError> {
    let c = client(s)?;
    match cmd {
        TemplatesCommand::List => {
            let list: Vec<Template> = c.get("/templates").await?;
            match s.output {
                OutputFormat::Json => print_json(&list),
                OutputFormat::Table => {
                    println!("{:<24} {:>7}  DESCRIPTION", "NAME", "VERSION");
                    for t in &list {
                        let v = if t.builtin { "builtin".to_string() } else { t.version.to_string() };
                        println!("{:<24} {:>7}  {}", t.name, v, t.description);
                    }
                }
            }
        }
        TemplatesCommand::Show { name, version } => {
            let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
            let t: Template = c.get(&format!("/templates/{}{q}", super::urlencode(&name))).await?;
            print_json(&t);
        }
        TemplatesCommand::Create { name, file, description } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            }
            .map_err(|e| CliError(format!("cannot read {}: {e}", file.display()), 2))?;
            let params: Map<String, Value> = serde_json::from_str(&text)
                .map_err(|e| CliError(format!("{} is not a JSON object of parameters: {e}", file.display()), 2))?;
            let body = json!({"name": name, "description": description, "parameters": params});
            let t: Template = c.post("/templates", &body).await?;
            match s.output {
                OutputFormat::Json => print_json(&t),
                OutputFormat::Table => println!("✓ Template {} version {} stored", t.name, t.version),
            }
        }
        TemplatesCommand::Delete { name } => {
            let _: Value = c.delete(&format!("/templates/{}", super::urlencode(&name))).await?;
            println!("✓ Template {name} deleted");
        }
    }
    Ok(0)
}
