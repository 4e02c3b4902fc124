//! How AUDIO tables and scans travel between processes: DataFusion's plan serialisation knows
//! neither, so these codecs add them and hand everything else to Ballista's own codecs.
//!
//! Functions travel by name (DataFusion's default), found in each process's registry.
//!
//! Every payload starts with one tag byte: [`OURS`] for an AUDIO table or scan, [`BALLISTA`]
//! for what Ballista's codec wrote after it.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{plan_err, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_protobuf_file_scan_config;
use datafusion_proto::physical_plan::to_proto::serialize_file_scan_config;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::FileScanExecConf;
use prost::Message;

use audiolake_udf::features::AnalysisOptions;

use crate::audio::{AudioSource, AudioTable, AudioTableFactory, ScanSpec, TableSpec};
use crate::progress::ScanProgress;
use crate::store::FeatureStore;

const BALLISTA: u8 = 0;
const OURS: u8 = 1;

/// An AUDIO table in a logical plan.
#[derive(Clone, PartialEq, Message)]
struct AudioTableNode {
    #[prost(string, tag = "1")]
    location: String,
    #[prost(string, repeated, tag = "2")]
    extensions: Vec<String>,
}

/// An AUDIO scan in a physical plan: DataFusion's file scan (groups, projection, statistics)
/// and what is ours.
#[derive(Clone, PartialEq, Message)]
struct AudioScanNode {
    #[prost(message, optional, tag = "1")]
    base: Option<FileScanExecConf>,
    #[prost(string, tag = "2")]
    location: String,
    #[prost(uint64, tag = "3")]
    musicnn_max_patches: u64,
}

/// Splits a payload into its tag and the rest.
fn untag(buf: &[u8]) -> Result<(u8, &[u8])> {
    match buf.split_first() {
        Some((&tag, rest)) if tag == BALLISTA || tag == OURS => Ok((tag, rest)),
        _ => plan_err!(
            "not a plan written by audiolake's codec (tag {:?})",
            buf.first()
        ),
    }
}

fn decode_error(what: &str, e: prost::DecodeError) -> DataFusionError {
    DataFusionError::Plan(format!("cannot decode {what}: {e}"))
}

/// The logical codec: AUDIO tables by location and extensions, rebuilt over the receiving
/// process's stores.
#[derive(Debug)]
pub struct AudioLogicalCodec {
    tables: AudioTableFactory,
    ballista: BallistaLogicalExtensionCodec,
}

impl AudioLogicalCodec {
    pub(crate) fn new(tables: AudioTableFactory) -> Self {
        Self {
            tables,
            ballista: BallistaLogicalExtensionCodec::default(),
        }
    }
}

impl LogicalExtensionCodec for AudioLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match untag(buf)? {
            (OURS, rest) => {
                let node =
                    AudioTableNode::decode(rest).map_err(|e| decode_error("an AUDIO table", e))?;
                let spec = TableSpec {
                    location: node.location,
                    extensions: node.extensions,
                };
                Ok(Arc::new(self.tables.from_spec(spec)?))
            }
            (_, rest) => self
                .ballista
                .try_decode_table_provider(rest, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(table) = node.downcast_ref::<AudioTable>() {
            let spec = table.spec()?;
            buf.push(OURS);
            AudioTableNode {
                location: spec.location,
                extensions: spec.extensions,
            }
            .encode(buf)
            .map_err(|e| DataFusionError::Plan(format!("cannot encode {table_ref}: {e}")))?;
            return Ok(());
        }
        buf.push(BALLISTA);
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
            .map_err(|e| {
                DataFusionError::Plan(format!(
                    "table {table_ref} cannot run on a cluster (only AUDIO, Parquet, CSV and JSON \
                     tables can): {e}"
                ))
            })
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

/// The physical codec: AUDIO scans, each task's given its own file groups, read through the
/// receiving process's feature store.
#[derive(Debug)]
pub struct AudioPhysicalCodec {
    features: Arc<FeatureStore>,
    progress: Arc<ScanProgress>,
    ballista: BallistaPhysicalExtensionCodec,
}

impl AudioPhysicalCodec {
    pub(crate) fn new(features: Arc<FeatureStore>, progress: Arc<ScanProgress>) -> Self {
        Self {
            features,
            progress,
            ballista: BallistaPhysicalExtensionCodec::default(),
        }
    }

    fn decode_scan(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = AudioScanNode::decode(buf).map_err(|e| decode_error("an AUDIO scan", e))?;
        let Some(base) = node.base else {
            return plan_err!("an AUDIO scan without its file scan");
        };
        let files = base.file_groups.iter().map(|g| g.files.len()).sum();
        let spec = ScanSpec {
            location: node.location,
            options: AnalysisOptions {
                musicnn_max_patches: usize::try_from(node.musicnn_max_patches)
                    .map_err(|_| DataFusionError::Plan("musicnn_max_patches too large".into()))?,
            },
        };
        let source = AudioSource::from_spec(
            spec,
            files,
            Arc::clone(&self.features),
            Arc::clone(&self.progress),
        )?;
        let config = parse_protobuf_file_scan_config(
            &base,
            &PhysicalPlanDecodeContext::new(ctx, self),
            proto_converter,
            Arc::new(source),
        )?;
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// The file scan and AUDIO source of `plan`, when it is an AUDIO scan.
fn audio_scan(plan: &dyn ExecutionPlan) -> Option<(&FileScanConfig, &AudioSource)> {
    let exec = plan.downcast_ref::<DataSourceExec>()?;
    let config = exec.data_source().downcast_ref::<FileScanConfig>()?;
    let source = config.file_source().downcast_ref::<AudioSource>()?;
    Some((config, source))
}

impl PhysicalExtensionCodec for AudioPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match untag(buf)? {
            (OURS, rest) => self.decode_scan(rest, ctx, proto_converter),
            (_, rest) => self.ballista.try_decode(rest, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some((config, source)) = audio_scan(node.as_ref()) {
            let spec = source.spec();
            let scan = AudioScanNode {
                base: Some(serialize_file_scan_config(config, self, proto_converter)?),
                location: spec.location,
                musicnn_max_patches: spec.options.musicnn_max_patches as u64,
            };
            buf.push(OURS);
            scan.encode(buf)
                .map_err(|e| DataFusionError::Plan(format!("cannot encode an AUDIO scan: {e}")))?;
            return Ok(());
        }
        buf.push(BALLISTA);
        self.ballista.try_encode(node, buf, proto_converter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_payloads_are_errors() {
        for buf in [&[][..], &[7], &[255, 1, 2]] {
            let err = untag(buf).unwrap_err().to_string();
            assert!(
                err.contains("not a plan written by audiolake's codec"),
                "{err}"
            );
        }
        // A field whose length runs past the end.
        let err = AudioScanNode::decode(&[0x12, 0xff, 0x01, b'x'][..]).unwrap_err();
        assert!(decode_error("an AUDIO scan", err)
            .to_string()
            .starts_with("Error during planning: cannot decode an AUDIO scan"));
    }

    #[test]
    fn table_nodes_round_trip() {
        let node = AudioTableNode {
            location: "s3://music/masters/".to_string(),
            extensions: vec!["flac".to_string(), "mp3".to_string()],
        };
        assert_eq!(
            AudioTableNode::decode(&node.encode_to_vec()[..]).unwrap(),
            node
        );
    }
}
